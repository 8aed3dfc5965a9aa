//! The `group` class: a local group is present with a given gid, or absent.
//!
//! OpenSVC names `group` / `groups` (object scripts `group.py`, `groups.py`). OpenSVC's rule
//! maps group names to their properties, a `-` before the name meaning the group must not
//! exist: `{"tibco": {"gid": 1000}, "-oldgroup": {}}`. Tenet's own form is one object per
//! group with a `name`: `{"name": "tibco", "gid": 1000}`, `{"name": "oldgroup", "state":
//! "absent"}`. Each group is one rule.
//!
//! check reads `/etc/group` of the managed system. fix edits `/etc/group` and `/etc/gshadow`
//! directly under the root prefix, as `groupadd`, `groupmod` and `groupdel` would (the locks,
//! backups and atomic writes of `modules/src/accounts.rs`): a new group is `name:x:gid:` with
//! `name:!::` in gshadow (when the system has one), its gid the rule's or a free one from
//! `GID_MIN`..`GID_MAX`; a gid already used by another group is refused; a changed gid is
//! carried over to the users whose primary group it was (as `groupmod -g`). Absent removes the
//! group from both files, unless it is a user's primary group (as `groupdel`), or one of the
//! system groups OpenSVC refuses to delete, or gid 0.
//!
//! Differences from OpenSVC are rows of `docs/opensvc-compat.md` (`#group-*`).

use serde::Deserialize;
use serde_json::Value;

use super::common::{self, State};
use crate::accounts::{self, Accounts, Defs};
use crate::class::Class;
use crate::host::{Host, HostView};
use crate::status::{Log, Status};

/// Groups OpenSVC's `group.py` refuses to delete (its blacklist), gid 0 aside.
const PROTECTED: &[&str] = &[
    "root", "bin", "daemon", "sys", "adm", "tty", "disk", "lp", "mem", "kmem", "wheel", "mail",
    "uucp", "man", "games", "gopher", "video", "dip", "ftp", "lock", "audio", "nobody", "users",
    "utmp", "utempter", "floppy", "vcsa", "cdrom", "tape", "dialout", "saslauth", "postdrop",
    "postfix", "sshd", "opensvc", "mailnull", "smmsp", "slocate", "rpc", "rpcuser", "nfsnobody",
    "tcpdump", "ntp",
];

/// One `group` rule: one group.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupRule {
    /// Group name (in OpenSVC's form, the key; `-name` there means `state = "absent"`).
    pub name: String,
    /// `present` (default) or `absent`.
    #[serde(default)]
    pub state: State,
    /// Group id: a number or a string of digits. A new group without one gets a free id from
    /// `GID_MIN`..`GID_MAX` of `login.defs`.
    #[serde(default, deserialize_with = "common::de_id")]
    pub gid: Option<u32>,
}

/// The `group` class.
#[derive(Debug)]
pub struct Group;

impl Class for Group {
    type Rule = GroupRule;

    const NAME: &'static str = "group";
    const ALIASES: &'static [&'static str] = &["groups", "group.py", "groups.py"];
    const DESCRIPTION: &'static str = "a local group is present with a given gid, or absent";

    fn rules(value: &Value) -> Result<Vec<GroupRule>, String> {
        let rules: Vec<GroupRule> = common::parse_named(value, "group")?;
        for r in &rules {
            accounts::check_name("name", &r.name).map_err(|e| format!("group {}: {e}", r.name))?;
        }
        Ok(rules)
    }

    fn describe(rule: &GroupRule) -> String {
        match rule.state {
            State::Present => format!("group {}", rule.name),
            State::Absent => format!("group -{}", rule.name),
        }
    }

    fn check(rule: &GroupRule, host: &HostView, log: &mut Log) -> Status {
        let name = &rule.name;
        let accounts = match Accounts::load(host) {
            Ok(a) => a,
            Err(e) => {
                log.err(format!("group {name}: {e}"));
                return Status::Nok;
            }
        };
        let problem = match (rule.state, accounts.group(name)) {
            (State::Absent, Some(g)) => {
                Some(format!("group {name}: exists (gid {}), expected absent", g.gid))
            }
            (State::Absent, None) => None,
            (State::Present, None) => Some(format!("group {name}: missing")),
            (State::Present, Some(g)) => rule
                .gid
                .filter(|gid| *gid != g.gid)
                .map(|gid| format!("group {name}: gid is {}, expected {gid}", g.gid)),
        };
        match problem {
            Some(p) => {
                log.err(p);
                Status::Nok
            }
            None => {
                log.info(match rule.state {
                    State::Present => format!("group {name}: ok"),
                    State::Absent => format!("group {name}: absent, as expected"),
                });
                Status::Ok
            }
        }
    }

    fn fix(rule: &GroupRule, host: &Host, log: &mut Log) -> Status {
        let result = Defs::load(host).and_then(|defs| {
            Accounts::edit(host, log, |acc, log| {
                refusal(rule, acc)?;
                match rule.state {
                    State::Present => present(rule, acc, &defs, log),
                    State::Absent => {
                        if acc.group(&rule.name).is_some() {
                            acc.remove_group(&rule.name);
                            log.info(format!("group {}: removed", rule.name));
                        }
                        Ok(())
                    }
                }
            })
        });
        match result {
            Ok(()) => Status::Ok,
            Err(e) => {
                log.err(e);
                Status::Nok
            }
        }
    }
}

/// Why the rule cannot be applied to `acc`, if it cannot.
fn refusal(rule: &GroupRule, acc: &Accounts) -> Result<(), String> {
    let name = &rule.name;
    match (rule.state, acc.group(name)) {
        (State::Absent, Some(g)) => {
            if PROTECTED.contains(&name.as_str()) || g.gid == 0 {
                return Err(format!(
                    "group {name}: a system group; refusing to delete it"
                ));
            }
            if let Some(u) = acc.users().find(|u| u.gid == g.gid) {
                return Err(format!(
                    "group {name}: the primary group of user {}; not removed (as groupdel)",
                    u.name
                ));
            }
        }
        (State::Present, g) => {
            if let Some(gid) = rule.gid
                && g.as_ref().is_none_or(|g| g.gid != gid)
                && let Some(other) = acc.group_by_gid(gid)
            {
                return Err(format!(
                    "group {name}: gid {gid} is already group {}'s",
                    other.name
                ));
            }
        }
        (State::Absent, None) => {}
    }
    Ok(())
}

fn present(rule: &GroupRule, acc: &mut Accounts, defs: &Defs, log: &mut Log) -> Result<(), String> {
    let name = &rule.name;
    match acc.group(name) {
        None => {
            let gid = match rule.gid {
                Some(gid) => gid,
                None => acc.free_gid(defs, None).map_err(|e| format!("group {name}: {e}"))?,
            };
            acc.add_group(name, gid);
            log.info(format!("group {name}: created with gid {gid}"));
        }
        Some(g) => {
            if let Some(gid) = rule.gid.filter(|gid| *gid != g.gid) {
                acc.group.update(name, |f| f[2] = gid.to_string());
                // As groupmod -g: the users whose primary group it was follow it.
                let users: Vec<String> = acc
                    .users()
                    .filter(|u| u.gid == g.gid)
                    .map(|u| u.name)
                    .collect();
                for u in &users {
                    acc.passwd.update(u, |f| f[3] = gid.to_string());
                }
                log.info(format!(
                    "group {name}: gid {} -> {gid}{}",
                    g.gid,
                    if users.is_empty() {
                        String::new()
                    } else {
                        format!(" (primary group of {} updated)", users.join(", "))
                    }
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_class_contract, check, fix};
    use serde_json::json;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    const GROUP: &str = "root:x:0:\nusers:x:100:\nstaff:x:1000:bob\n";
    const GSHADOW: &str = "root:*::\nusers:*::\nstaff:!::bob\n";

    fn root() -> (tempfile::TempDir, Host) {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        fs::create_dir_all(&etc).unwrap();
        fs::write(etc.join("group"), GROUP).unwrap();
        fs::write(etc.join("gshadow"), GSHADOW).unwrap();
        fs::set_permissions(etc.join("gshadow"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::write(
            etc.join("passwd"),
            "root:x:0:0::/root:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\n",
        )
        .unwrap();
        let h = Host::new(dir.path()).with_var_dir(dir.path().join("var"));
        (dir, h)
    }

    fn read(dir: &tempfile::TempDir, f: &str) -> String {
        fs::read_to_string(dir.path().join(f)).unwrap()
    }

    #[test]
    fn the_upstream_example_creates_both_groups() {
        let (dir, h) = root();
        let log = assert_class_contract::<Group>(
            &h,
            &[dir.path()],
            json!({"tibco": {"gid": 1001}, "tibco1": {"gid": "1002"}}),
        );
        assert!(log.iter().any(|l| l == "group tibco: missing"), "{log:?}");
        assert_eq!(
            read(&dir, "etc/group"),
            format!("{GROUP}tibco:x:1001:\ntibco1:x:1002:\n")
        );
        assert_eq!(
            read(&dir, "etc/gshadow"),
            format!("{GSHADOW}tibco:!::\ntibco1:!::\n")
        );
        assert_eq!(read(&dir, "etc/group-"), format!("{GROUP}tibco:x:1001:\n"));
        let m = fs::metadata(dir.path().join("etc/gshadow")).unwrap();
        assert_eq!(m.mode() & 0o777, 0o640);
    }

    #[test]
    fn a_gid_change_carries_the_primary_groups_along() {
        let (dir, h) = root();
        assert_class_contract::<Group>(&h, &[dir.path()], json!({"name": "staff", "gid": 2000}));
        assert!(read(&dir, "etc/group").contains("staff:x:2000:bob\n"));
        assert!(read(&dir, "etc/passwd").contains("bob:x:1000:2000:"));
    }

    #[test]
    fn without_a_gid_a_free_one_is_taken() {
        let (dir, h) = root();
        assert_class_contract::<Group>(&h, &[dir.path()], json!({"name": "new"}));
        assert!(read(&dir, "etc/group").ends_with("new:x:1001:\n"));
    }

    #[test]
    fn absent_removes_but_not_a_primary_or_system_group() {
        let (dir, h) = root();
        fs::write(
            dir.path().join("etc/group"),
            format!("{GROUP}old:x:1500:\n"),
        )
        .unwrap();
        assert_class_contract::<Group>(&h, &[dir.path()], json!({"-old": {}}));
        assert_eq!(read(&dir, "etc/group"), GROUP);
        for (rule, want) in [
            (json!({"-staff": {}}), "primary group of user bob"),
            (json!({"-users": {}}), "refusing to delete"),
        ] {
            let (st, _) = check::<Group>(&h, rule.clone());
            assert_eq!(st, Status::Nok);
            let (st, log) = fix::<Group>(&h, rule);
            assert_eq!(st, Status::Nok);
            assert!(log.iter().any(|l| l.contains(want)), "{log:?}");
        }
        assert_eq!(read(&dir, "etc/group"), GROUP);
    }

    #[test]
    fn a_used_gid_is_refused() {
        let (dir, h) = root();
        let (st, log) = fix::<Group>(&h, json!({"tibco": {"gid": 100}}));
        assert_eq!(st, Status::Nok);
        assert!(log.iter().any(|l| l.contains("gid 100 is already group users's")), "{log:?}");
        assert_eq!(read(&dir, "etc/group"), GROUP);
        assert!(!dir.path().join("etc/group-").exists());
    }

    #[test]
    fn bad_rules_name_the_field() {
        for (rule, want) in [
            (json!({"tibco": {"gid": -1}}), "group tibco: invalid id -1"),
            (json!({"tibco": {"uid": 1}}), "group tibco: unknown field `uid`"),
            (json!({"a b": {}}), "group a b: name: invalid name"),
        ] {
            let err = Group::rules(&rule).unwrap_err();
            assert!(err.contains(want), "{rule}: {err}");
        }
    }
}
