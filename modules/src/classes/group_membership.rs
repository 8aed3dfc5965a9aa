//! The `group_membership` class: users are supplementary members of a group.
//!
//! OpenSVC names `group_membership` / `groups_membership` (object scripts
//! `group_membership.py`, `groups_membership.py`). OpenSVC's rule maps group names to their
//! members: `{"tibco": {"members": ["tibco", "tibco1"]}}`; Tenet's own form is one object per
//! group with a `name`: `{"name": "tibco", "members": ["tibco", "tibco1"]}`. Each group is
//! one rule. The members listed must be members; other members are left alone.
//!
//! check reads `/etc/passwd` and `/etc/group` of the managed system, as OpenSVC's object
//! does: every listed user exists and is a member, except the users whose primary group this
//! is (they are left out, with a message, as in OpenSVC); every member already in the group
//! exists too (`grpck` calls a member without an account an error). fix adds the missing
//! members to `/etc/group` and to `/etc/gshadow` (when the group is there), as `usermod -a -G`
//! would, with the locks, backups and atomic writes of `modules/src/accounts.rs`. It creates
//! neither users nor groups (the `user` and `group` classes do), and removes no member.
//!
//! Differences from OpenSVC are rows of `docs/opensvc-compat.md` (`#membership-*`).

use serde::Deserialize;
use serde_json::Value;

use super::common;
use crate::accounts::{self, Accounts};
use crate::class::Class;
use crate::host::{Host, HostView};
use crate::status::{Log, Status};

/// One `group_membership` rule: the members one group must have.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembershipRule {
    /// Group name (in OpenSVC's form, the key).
    pub name: String,
    /// Users that must be supplementary members (surrounding spaces are ignored).
    #[serde(default)]
    pub members: Vec<String>,
}

/// The `group_membership` class.
#[derive(Debug)]
pub struct GroupMembership;

/// What a group's membership lacks.
#[derive(Debug, Default)]
struct Findings {
    /// Listed users that are not members.
    missing: Vec<String>,
    /// Listed users without an account.
    unknown_listed: Vec<String>,
    /// Members already in the group without an account.
    unknown_members: Vec<String>,
    /// Listed users whose primary group this is (left out).
    primary: Vec<String>,
}

impl Class for GroupMembership {
    type Rule = MembershipRule;

    const NAME: &'static str = "group_membership";
    const ALIASES: &'static [&'static str] = &[
        "groups_membership",
        "group_membership.py",
        "groups_membership.py",
    ];
    const DESCRIPTION: &'static str = "users are supplementary members of a local group";

    fn rules(value: &Value) -> Result<Vec<MembershipRule>, String> {
        let objects = common::named_rules(value, "group_membership")?;
        let mut rules = Vec::new();
        for mut v in objects {
            let name = v["name"].as_str().unwrap_or_default().to_owned();
            if let Some(state) = v.as_object_mut().and_then(|m| m.remove("state")) {
                if state == "absent" {
                    return Err(format!(
                        "group_membership {name}: a '-' before the name (absent) means \
                         nothing for a membership; list the members instead"
                    ));
                }
                return Err(format!("group_membership {name}: unknown field `state`"));
            }
            let mut rule: MembershipRule = serde_json::from_value(v)
                .map_err(|e| format!("group_membership {name}: {e}"))?;
            accounts::check_name("name", &rule.name)
                .map_err(|e| format!("group_membership {name}: {e}"))?;
            for m in &mut rule.members {
                *m = m.trim().to_owned();
                accounts::check_name("members", m)
                    .map_err(|e| format!("group_membership {name}: {e}"))?;
            }
            rules.push(rule);
        }
        Ok(rules)
    }

    fn describe(rule: &MembershipRule) -> String {
        format!("group {} members {}", rule.name, rule.members.join(","))
    }

    fn check(rule: &MembershipRule, host: &HostView, log: &mut Log) -> Status {
        let name = &rule.name;
        let accounts = match Accounts::load(host) {
            Ok(a) => a,
            Err(e) => {
                log.err(format!("group {name}: {e}"));
                return Status::Nok;
            }
        };
        let Some(f) = findings(rule, &accounts) else {
            log.err(format!(
                "group {name}: missing, so {} cannot be members (a group rule creates it)",
                rule.members.join(", ")
            ));
            return Status::Nok;
        };
        if !f.primary.is_empty() {
            log.info(format!(
                "group {name}: {} left out: it is their primary group",
                f.primary.join(", ")
            ));
        }
        let mut ok = true;
        for u in &f.unknown_members {
            log.err(format!("group {name}: existing member {u} has no account"));
            ok = false;
        }
        for u in &f.unknown_listed {
            log.err(format!("group {name}: member {u} has no account"));
            ok = false;
        }
        if !f.missing.is_empty() {
            log.err(format!("group {name}: {} not members", f.missing.join(", ")));
            ok = false;
        }
        if ok {
            log.info(format!("group {name}: members ok"));
            Status::Ok
        } else {
            Status::Nok
        }
    }

    fn fix(rule: &MembershipRule, host: &Host, log: &mut Log) -> Status {
        let name = &rule.name;
        let result = Accounts::edit(host, log, |acc, log| {
            let Some(f) = findings(rule, acc) else {
                return Err(format!(
                    "group {name}: missing; create it with a group rule first"
                ));
            };
            for u in &f.missing {
                acc.add_member(name, u);
            }
            if !f.missing.is_empty() {
                log.info(format!("group {name}: {} added", f.missing.join(", ")));
            }
            Ok(f)
        });
        let f = match result {
            Ok(f) => f,
            Err(e) => {
                log.err(e);
                return Status::Nok;
            }
        };
        let mut ok = true;
        for u in &f.unknown_listed {
            log.err(format!(
                "group {name}: member {u} has no account; not added (a user rule creates it)"
            ));
            ok = false;
        }
        for u in &f.unknown_members {
            log.err(format!(
                "group {name}: existing member {u} has no account; left as it is"
            ));
            ok = false;
        }
        if ok { Status::Ok } else { Status::Nok }
    }
}

/// What the group lacks (`None`: the group does not exist).
fn findings(rule: &MembershipRule, acc: &Accounts) -> Option<Findings> {
    let group = acc.group(&rule.name)?;
    let mut f = Findings::default();
    let exists = |u: &str| acc.user(u).is_some();
    for m in &group.members {
        if !exists(m) {
            f.unknown_members.push(m.clone());
        }
    }
    for u in &rule.members {
        match acc.user(u) {
            None => f.unknown_listed.push(u.clone()),
            Some(p) if p.gid == group.gid => f.primary.push(u.clone()),
            Some(_) if group.members.contains(u) => {}
            Some(_) => f.missing.push(u.clone()),
        }
    }
    for list in [&mut f.missing, &mut f.unknown_listed, &mut f.primary] {
        list.dedup();
    }
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_class_contract, check, fix};
    use serde_json::json;
    use std::fs;

    const PASSWD: &str = "root:x:0:0::/root:/bin/sh\ntibco:x:1000:1000::/h:/bin/sh\n\
        tibco1:x:1001:1001::/h:/bin/sh\nother:x:1002:100::/h:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nusers:x:100:\ntibco:x:1000:\ntibco1:x:1001:\n";
    const GSHADOW: &str = "root:*::\nusers:*::\ntibco:!::\ntibco1:!::\n";

    fn root() -> (tempfile::TempDir, Host) {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        fs::create_dir_all(&etc).unwrap();
        fs::write(etc.join("passwd"), PASSWD).unwrap();
        fs::write(etc.join("group"), GROUP).unwrap();
        fs::write(etc.join("gshadow"), GSHADOW).unwrap();
        let h = Host::new(dir.path()).with_var_dir(dir.path().join("var"));
        (dir, h)
    }

    fn read(dir: &tempfile::TempDir, f: &str) -> String {
        fs::read_to_string(dir.path().join(f)).unwrap()
    }

    #[test]
    fn the_upstream_example_adds_members_and_skips_primary_groups() {
        let (dir, h) = root();
        let log = assert_class_contract::<GroupMembership>(
            &h,
            &[dir.path()],
            json!({"tibco": {"members": ["tibco", " tibco1"]}, "users": {"members": ["tibco1", "other"]}}),
        );
        assert!(
            log.iter().any(|l| l == "group tibco: tibco left out: it is their primary group"),
            "{log:?}"
        );
        assert!(log.iter().any(|l| l == "group tibco: tibco1 not members"), "{log:?}");
        assert_eq!(
            read(&dir, "etc/group"),
            "root:x:0:\nusers:x:100:tibco1\ntibco:x:1000:tibco1\ntibco1:x:1001:\n"
        );
        assert_eq!(
            read(&dir, "etc/gshadow"),
            "root:*::\nusers:*::tibco1\ntibco:!::tibco1\ntibco1:!::\n"
        );
    }

    #[test]
    fn members_are_added_to_the_existing_list() {
        let (dir, h) = root();
        fs::write(dir.path().join("etc/group"), GROUP.replace("users:x:100:", "users:x:100:tibco")).unwrap();
        assert_class_contract::<GroupMembership>(
            &h,
            &[dir.path()],
            json!({"name": "users", "members": ["tibco1"]}),
        );
        assert!(read(&dir, "etc/group").contains("users:x:100:tibco,tibco1\n"));
    }

    #[test]
    fn unknown_users_and_groups_are_nok_and_not_invented() {
        let (dir, h) = root();
        let (st, log) = check::<GroupMembership>(&h, json!({"nogroup": {"members": ["tibco"]}}));
        assert_eq!(st, Status::Nok);
        assert!(log.iter().any(|l| l.contains("group nogroup: missing")), "{log:?}");
        let (st, log) = fix::<GroupMembership>(&h, json!({"users": {"members": ["ghost", "tibco"]}}));
        assert_eq!(st, Status::Nok);
        assert!(log.iter().any(|l| l.contains("member ghost has no account")), "{log:?}");
        // The known one was added all the same.
        assert!(read(&dir, "etc/group").contains("users:x:100:tibco\n"));
        fs::write(dir.path().join("etc/group"), GROUP.replace("users:x:100:", "users:x:100:ghost")).unwrap();
        let (st, log) = check::<GroupMembership>(&h, json!({"users": {"members": []}}));
        assert_eq!(st, Status::Nok);
        assert!(log.iter().any(|l| l.contains("existing member ghost has no account")), "{log:?}");
    }

    #[test]
    fn bad_rules_name_the_field() {
        for (rule, want) in [
            (json!({"tibco": {"member": ["x"]}}), "group_membership tibco: unknown field `member`"),
            (json!({"tibco": {"members": "x"}}), "group_membership tibco: invalid type"),
            (json!({"-tibco": {"members": ["x"]}}), "means nothing for a membership"),
            (json!({"tibco": {"members": ["a:b"]}}), "members: invalid name"),
        ] {
            let err = GroupMembership::rules(&rule).unwrap_err();
            assert!(err.contains(want), "{rule}: {err}");
        }
    }
}
