//! The `mount` class (check only): a path is a mount point of its own, with a given file
//! system type and required mount options.
//!
//! A rule is `{"path": "/var/lib/containers", "fstype": "xfs", "options": ["defaults",
//! "prjquota"]}`. check reads `<root>/proc/self/mountinfo` (proc(5)): the path must be the
//! mount point of an entry (octal escapes such as `\040` for a space are decoded); when several
//! entries mount on it, the last one (the one on top) is the one that counts. `fstype`, when
//! given, must equal the entry's file system type; each of `options` must appear among the
//! per-mount options or the super-block options (`prjquota` is a super-block option of xfs).
//! Options that only mean something to fstab or mount(8) are not looked for: `defaults`,
//! `auto`, `noauto`, `nofail`, `user`, `nouser`, `users`, `owner`, `group`, `_netdev`,
//! `comment=...` and `x-*`.
//!
//! Tenet does not mount or remount: fixable and fix are n/a, with a message saying how the
//! mount is expected to be provided (an fstab entry or a systemd `.mount` unit, which the
//! `file` and `systemd_unit` classes can manage).

use serde::Deserialize;

use crate::class::Class;
use crate::host::{Host, HostView};
use crate::status::{Log, Status};

/// One `mount` rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountRule {
    /// Absolute path that must be a mount point.
    pub path: String,
    /// File system type the mount must have (`xfs`, `ext4`, ...); unset: any.
    #[serde(default)]
    pub fstype: Option<String>,
    /// Options the mount must have (`prjquota`, `ro`, `noexec`, ...); fstab-only options such
    /// as `defaults` or `nofail` are accepted and ignored.
    #[serde(default)]
    pub options: Vec<String>,
}

/// The `mount` class.
#[derive(Debug)]
pub struct Mount;

/// One line of mountinfo, the fields this class uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Mount point, unescaped.
    pub mount_point: String,
    /// Per-mount options (`rw,relatime`).
    pub mount_options: Vec<String>,
    /// File system type.
    pub fstype: String,
    /// Mount source (device), unescaped.
    pub source: String,
    /// Super-block options.
    pub super_options: Vec<String>,
}

/// fstab / mount(8) options that never show in mountinfo.
fn is_fstab_only(option: &str) -> bool {
    matches!(
        option,
        "defaults"
            | "auto"
            | "noauto"
            | "nofail"
            | "user"
            | "nouser"
            | "users"
            | "owner"
            | "group"
            | "_netdev"
    ) || option.starts_with("x-")
        || option.starts_with("comment=")
}

impl Class for Mount {
    type Rule = MountRule;

    const NAME: &'static str = "mount";
    const ALIASES: &'static [&'static str] = &["mounts"];
    const DESCRIPTION: &'static str =
        "a path is its own mount point, with a file system type and options (check only)";

    fn describe(rule: &MountRule) -> String {
        rule.path.clone()
    }

    fn check(rule: &MountRule, host: &HostView, log: &mut Log) -> Status {
        if !rule.path.starts_with('/') {
            log.err(format!("mount {:?}: path is not absolute", rule.path));
            return Status::Nok;
        }
        let want_path = normalize(&rule.path);
        let table = match host.path("/proc/self/mountinfo").and_then(|p| {
            host.read_to_string(&p)
                .map(|t| t.ok_or_else(|| p.real().display().to_string()))
        }) {
            Ok(Ok(text)) => parse_mountinfo(&text),
            Ok(Err(p)) => {
                log.err(format!("mount {}: cannot read mounts: {p} does not exist", rule.path));
                return Status::Nok;
            }
            Err(e) => {
                log.err(format!("mount {}: cannot read mounts: {e}", rule.path));
                return Status::Nok;
            }
        };
        let Some(entry) = table.iter().rev().find(|e| e.mount_point == want_path) else {
            let under = table
                .iter()
                .filter(|e| is_prefix(&e.mount_point, &want_path))
                .max_by_key(|e| e.mount_point.len())
                .map(|e| format!(" (it is on the {} mount of {})", e.fstype, e.mount_point))
                .unwrap_or_default();
            log.err(format!("mount {}: not a mount point{under}", rule.path));
            return Status::Nok;
        };
        let mut ok = true;
        if let Some(fstype) = &rule.fstype
            && entry.fstype != *fstype
        {
            log.err(format!(
                "mount {}: file system type is {}, expected {fstype}",
                rule.path, entry.fstype
            ));
            ok = false;
        }
        let missing: Vec<&str> = rule
            .options
            .iter()
            .map(|o| o.trim())
            .filter(|o| !o.is_empty() && !is_fstab_only(o))
            .filter(|o| {
                !entry.mount_options.iter().any(|m| m == o)
                    && !entry.super_options.iter().any(|m| m == o)
            })
            .collect();
        if !missing.is_empty() {
            log.err(format!(
                "mount {}: missing option(s) {}; has {} (super-block: {})",
                rule.path,
                missing.join(","),
                entry.mount_options.join(","),
                entry.super_options.join(",")
            ));
            ok = false;
        }
        if ok {
            log.info(format!(
                "mount {}: {} on {} ({}), ok",
                rule.path,
                entry.source,
                entry.fstype,
                entry.super_options.join(",")
            ));
            Status::Ok
        } else {
            Status::Nok
        }
    }

    fn fixable(rule: &MountRule, _host: &HostView, log: &mut Log) -> Status {
        log.info(format!(
            "mount {}: n/a, tenet does not mount file systems",
            rule.path
        ));
        Status::NotApplicable
    }

    fn fix(rule: &MountRule, _host: &Host, log: &mut Log) -> Status {
        log.err(format!(
            "mount {}: n/a, tenet does not mount file systems: provide the mount with an fstab \
             entry or a systemd .mount unit (file / systemd_unit classes), then mount it",
            rule.path
        ));
        Status::NotApplicable
    }
}

/// `/a/b/` → `/a/b`; `/` stays `/`.
fn normalize(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.to_string()
    }
}

/// Whether mount point `mp` contains `path`.
fn is_prefix(mp: &str, path: &str) -> bool {
    mp == "/" || path == mp || path.starts_with(&format!("{mp}/"))
}

/// Parses `/proc/self/mountinfo`; malformed lines are skipped.
///
/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            if l.len() < 6 || r.len() < 2 {
                return None;
            }
            let opts = |s: &str| s.split(',').map(str::to_string).collect::<Vec<_>>();
            Some(MountEntry {
                mount_point: unescape(l[4]),
                mount_options: opts(l[5]),
                fstype: r[0].to_string(),
                source: unescape(r[1]),
                super_options: r.get(2).map(|s| opts(s)).unwrap_or_default(),
            })
        })
        .collect()
}

/// Decodes the kernel's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134`
/// backslash).
pub fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && b.get(i + 1..i + 4)
                .is_some_and(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)))
        {
            let v = (b[i + 1] - b'0') as u32 * 64 + (b[i + 2] - b'0') as u32 * 8 + (b[i + 3] - b'0') as u32;
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_check_only_contract, check};
    use serde_json::json;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
40 22 8:17 / /var/lib/containers rw,relatime shared:30 - xfs /dev/sdb1 rw,attr2,inode64,logbufs=8,logbsize=32k,prjquota
41 22 8:18 / /srv/with\\040space rw,relatime shared:31 - ext4 /dev/sdb2 rw
42 22 8:19 / /data rw,relatime shared:32 - xfs /dev/sdb3 rw,attr2,inode64,noquota
43 42 0:50 / /data rw,relatime shared:33 - tmpfs tmpfs rw,size=1024k
";

    fn root_with(mountinfo: &str) -> (tempfile::TempDir, Host) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("proc/self/mountinfo");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, mountinfo).unwrap();
        let h = Host::new(d.path()).with_var_dir(d.path().join("var/lib/tenet"));
        (d, h)
    }

    fn status(h: &Host, rule: serde_json::Value) -> (Status, Vec<String>) {
        check::<Mount>(h, rule)
    }

    #[test]
    fn true_cases_from_a_crafted_mountinfo() {
        let (_d, h) = root_with(MOUNTINFO);
        for rule in [
            json!({"path": "/var/lib/containers", "fstype": "xfs", "options": ["defaults", "prjquota"]}),
            json!({"path": "/var/lib/containers/", "options": ["rw", "relatime", "nofail", "x-systemd.requires=foo"]}),
            json!({"path": "/srv/with space", "fstype": "ext4"}),
            json!({"path": "/"}),
            // The mount on top wins.
            json!({"path": "/data", "fstype": "tmpfs", "options": ["size=1024k"]}),
        ] {
            let (st, log) = status(&h, rule.clone());
            assert_eq!(st, Status::Ok, "{rule}: {log:?}");
        }
    }

    #[test]
    fn false_cases_from_a_crafted_mountinfo() {
        let (d, h) = root_with(MOUNTINFO);
        for (rule, needle) in [
            (
                json!({"path": "/var/lib/docker", "fstype": "xfs"}),
                "not a mount point (it is on the ext4 mount of /)",
            ),
            (
                json!({"path": "/var/lib/containers/sub"}),
                "it is on the xfs mount of /var/lib/containers",
            ),
            (
                json!({"path": "/var/lib/containers", "fstype": "ext4"}),
                "file system type is xfs, expected ext4",
            ),
            (
                json!({"path": "/var/lib/containers", "options": ["prjquota", "noexec"]}),
                "missing option(s) noexec",
            ),
            (json!({"path": "/srv/with"}), "not a mount point"),
            (
                json!({"path": "/data", "fstype": "xfs"}),
                "file system type is tmpfs, expected xfs",
            ),
        ] {
            let (st, log) = status(&h, rule.clone());
            assert_eq!(st, Status::Nok, "{rule}: {log:?}");
            assert!(log.iter().any(|l| l.contains(needle)), "{rule}: {log:?}");
        }
        // The check-only contract, on a mount without prjquota.
        std::fs::write(
            d.path().join("proc/self/mountinfo"),
            MOUNTINFO.replace(",prjquota", ",noquota"),
        )
        .unwrap();
        let log = assert_check_only_contract::<Mount>(
            &h,
            &[d.path()],
            json!({"path": "/var/lib/containers", "fstype": "xfs", "options": ["defaults", "prjquota"]}),
        );
        assert!(log.iter().any(|l| l.contains("missing option(s) prjquota")), "{log:?}");
    }

    #[test]
    fn missing_mountinfo_and_bad_rules() {
        let d = tempfile::tempdir().unwrap();
        let h = Host::new(d.path());
        let (st, log) = status(&h, json!({"path": "/x"}));
        assert_eq!(st, Status::Nok);
        assert!(log[0].contains("does not exist"), "{log:?}");
        let (st, log) = status(&h, json!({"path": "x"}));
        assert_eq!(st, Status::Nok);
        assert!(log[0].contains("not absolute"), "{log:?}");
        let err = Mount::rules(&json!({"path": "/x", "type": "xfs"})).unwrap_err();
        assert!(err.contains("unknown field `type`"), "{err}");
        let err = Mount::rules(&json!({"path": "/x", "options": "rw"})).unwrap_err();
        assert!(err.contains("sequence"), "{err}");
    }

    #[test]
    fn octal_escapes() {
        assert_eq!(unescape("/a\\040b\\011c\\134d\\012"), "/a b\tc\\d\n");
        assert_eq!(unescape("/plain\\x"), "/plain\\x");
        assert_eq!(unescape("\\04"), "\\04");
    }
}
