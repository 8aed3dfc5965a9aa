//! The `user` class: a local account is present with the given properties, or absent.
//!
//! OpenSVC names `user` / `users` (object scripts `user.py`, `users.py`). OpenSVC's rule maps
//! login names to their properties, a `-` before the name meaning the account must not exist:
//! `{"tibco": {"uid": 1000, "shell": "/bin/ksh", "gecos": "agecos"}, "-olduser": {}}`.
//! Tenet's own form is one object per account with a `name` (a TOML array of tables):
//! `{"name": "tibco", "uid": 1000, "shell": "/bin/ksh"}`, `{"name": "olduser", "state":
//! "absent"}`. Each account is one rule.
//!
//! check reads `/etc/passwd` and `/etc/shadow` of the managed system: the account exists with
//! each property the rule gives (the password hash in shadow, or in passwd when the system
//! has no shadow file; a user without a shadow entry on a shadowed system is nok), and, unless
//! `check_home` is `"no"`, its home directory exists and belongs to it. Absent: no passwd
//! entry.
//!
//! fix edits the databases directly under the root prefix, as `useradd`, `usermod` and
//! `userdel` would (the locks, backups and atomic writes of `modules/src/accounts.rs`): a new
//! account gets the rule's properties and `useradd`'s defaults for the others (a free uid,
//! a user private group or `GROUP`, `HOME`/name, `SHELL`, a locked password `!`, password
//! ageing from `login.defs`), and a home copied from the skeleton. A changed uid or gid is
//! carried over to the files of the home directory that had the old one (`usermod -u/-g`).
//! Absent removes the passwd and shadow entries, the memberships, and the user private group
//! (as `userdel` without `-r`: the home stays). System accounts OpenSVC refuses to delete
//! (`root`, `bin`, `daemon`, ...) and uid 0 are refused.
//!
//! `%%ENV:USERS_INITIAL_PASSWD%%`-style: when the module's variable `users_initial_passwd` is
//! `true` (OpenSVC's `OSVC_COMP_USERS_INITIAL_PASSWD=true`), the password is set when the
//! account is created and neither checked nor changed afterwards.
//!
//! Differences from OpenSVC are rows of `docs/opensvc-compat.md` (`#user-*`).

use std::os::unix::fs::MetadataExt;

use serde::Deserialize;
use serde_json::Value;

use super::common::{self, Owner, State};
use crate::accounts::{self, Accounts, Defs, PasswdEntry};
use crate::class::{Class, RuleContext};
use crate::host::{Host, HostView, RootedPath};
use crate::status::{Log, Status};

/// Accounts OpenSVC's `user.py` refuses to delete (its blacklist), uid 0 aside.
const PROTECTED: &[&str] = &[
    "root",
    "bin",
    "daemon",
    "adm",
    "lp",
    "sync",
    "shutdown",
    "halt",
    "mail",
    "news",
    "uucp",
    "operator",
    "nobody",
    "nscd",
    "vcsa",
    "pcap",
    "mailnull",
    "smmsp",
    "sshd",
    "rpc",
    "avahi",
    "rpcuser",
    "nfsnobody",
    "haldaemon",
    "avahi-autoipd",
    "ntp",
];

/// How many entries a home skeleton may hold (a copy, not a backup tool).
const MAX_SKEL_ENTRIES: usize = 10_000;

/// One `user` rule: one account.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRule {
    /// Login name (in OpenSVC's form, the key; `-name` there means `state = "absent"`).
    pub name: String,
    /// `present` (default) or `absent`.
    #[serde(default)]
    pub state: State,
    /// User id: a number or a string of digits. A new account without one gets a free id
    /// from `UID_MIN`..`UID_MAX` of `login.defs`.
    #[serde(default, deserialize_with = "common::de_id")]
    pub uid: Option<u32>,
    /// Primary group: an id or a group name (the group must exist). A new account without
    /// one gets a group of its own name (`USERGROUPS_ENAB yes`) or `GROUP` of
    /// `/etc/default/useradd`.
    #[serde(default, deserialize_with = "common::de_gid")]
    pub gid: Option<Owner>,
    /// Home directory (absolute). Default for a new account: `HOME` of
    /// `/etc/default/useradd` (`/home`) and the name.
    pub home: Option<String>,
    /// Login shell. Default for a new account: `SHELL` of `/etc/default/useradd` (`/bin/bash`
    /// without it, as `useradd`).
    pub shell: Option<String>,
    /// Comment (GECOS) field.
    pub gecos: Option<String>,
    /// Password hash (as `crypt(3)` writes it). Empty or `x`: the password is not managed.
    /// `!!` is also satisfied by an empty hash (as in OpenSVC).
    pub password: Option<String>,
    /// OpenSVC's name for the shadow password hash; the same as `password`, which wins when
    /// both are given.
    pub spassword: Option<String>,
    /// Whether the home directory must exist and belong to the user: `"yes"` (default) or
    /// `"no"` (or a boolean).
    #[serde(default, deserialize_with = "common::de_yes_no")]
    pub check_home: Option<bool>,
    /// OpenSVC's account database name; only `files` (the default) is managed: an account
    /// missing from another database is not created.
    pub db: Option<String>,
    /// Set from the module's `users_initial_passwd` variable, not from the rule.
    #[serde(skip)]
    pub initial_passwd: bool,
}

impl UserRule {
    /// The password hash the rule manages, if any.
    fn hash(&self) -> Option<&str> {
        [&self.password, &self.spassword]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .find(|h| !h.is_empty())
            .filter(|h| *h != "x")
    }

    fn check_home(&self) -> bool {
        self.check_home.unwrap_or(true)
    }

    /// Whether a missing account may be created (OpenSVC: `db` absent or `files`).
    fn creatable(&self) -> bool {
        self.db.as_deref().is_none_or(|d| d == "files")
    }

    /// Why deleting this account is refused, if it is.
    fn protected(&self, accounts: &Accounts) -> Option<String> {
        if PROTECTED.contains(&self.name.as_str()) {
            return Some(format!(
                "user {}: a system account; refusing to delete it",
                self.name
            ));
        }
        accounts
            .user(&self.name)
            .filter(|u| u.uid == 0)
            .map(|_| format!("user {}: uid 0; refusing to delete it", self.name))
    }

    /// Checks what the rule says before anything is read: a bad field is refused at load.
    fn validate(&self) -> Result<(), String> {
        let at = |e: String| format!("user {}: {e}", self.name);
        accounts::check_name("name", &self.name).map_err(at)?;
        for (field, value) in [
            ("home", &self.home),
            ("shell", &self.shell),
            ("gecos", &self.gecos),
            ("password", &self.password),
            ("spassword", &self.spassword),
        ] {
            if let Some(v) = value {
                accounts::check_field(field, v).map_err(at)?;
            }
        }
        if let Some(home) = &self.home
            && (!home.starts_with('/') || home.split('/').any(|c| c == ".."))
        {
            return Err(at(format!(
                "home: {home:?} is not an absolute path without '..'"
            )));
        }
        if let Some(Owner::Name(g)) = &self.gid {
            accounts::check_name("gid", g).map_err(at)?;
        }
        Ok(())
    }
}

/// The `user` class.
#[derive(Debug)]
pub struct User;

impl Class for User {
    type Rule = UserRule;

    const NAME: &'static str = "user";
    const ALIASES: &'static [&'static str] = &["users", "user.py", "users.py"];
    const DESCRIPTION: &'static str =
        "a local account is present with given properties (passwd, shadow, home), or absent";

    fn rules(value: &Value) -> Result<Vec<UserRule>, String> {
        let rules: Vec<UserRule> = common::parse_named(value, "user")?;
        for r in &rules {
            r.validate()?;
        }
        Ok(rules)
    }

    fn rules_in(value: &Value, ctx: &RuleContext) -> Result<Vec<UserRule>, String> {
        let initial = match ctx.data.get("users_initial_passwd") {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s == "true",
            _ => false,
        };
        let mut rules = Self::rules(value)?;
        for r in &mut rules {
            r.initial_passwd = initial;
        }
        Ok(rules)
    }

    fn describe(rule: &UserRule) -> String {
        match rule.state {
            State::Present => format!("user {}", rule.name),
            State::Absent => format!("user -{}", rule.name),
        }
    }

    fn check(rule: &UserRule, host: &HostView, log: &mut Log) -> Status {
        let accounts = match Accounts::load(host) {
            Ok(a) => a,
            Err(e) => {
                log.err(format!("user {}: {e}", rule.name));
                return Status::Nok;
            }
        };
        let problems = match rule.state {
            State::Absent => match accounts.user(&rule.name) {
                Some(u) => vec![format!(
                    "user {}: exists (uid {}), expected absent",
                    rule.name, u.uid
                )],
                None => Vec::new(),
            },
            State::Present => present_problems(rule, host, &accounts, log),
        };
        if problems.is_empty() {
            match rule.state {
                State::Absent => log.info(format!("user {}: absent, as expected", rule.name)),
                State::Present => log.info(format!("user {}: ok", rule.name)),
            }
            return Status::Ok;
        }
        for p in problems {
            log.err(p);
        }
        Status::Nok
    }

    fn fixable(rule: &UserRule, host: &HostView, log: &mut Log) -> Status {
        let accounts = match Accounts::load(host) {
            Ok(a) => a,
            Err(e) => {
                log.err(format!("user {}: {e}", rule.name));
                return Status::Nok;
            }
        };
        let refused = match rule.state {
            State::Absent => rule.protected(&accounts),
            State::Present if accounts.user(&rule.name).is_none() && !rule.creatable() => {
                Some(not_creatable(rule))
            }
            State::Present => None,
        };
        match refused {
            Some(why) => {
                log.err(why);
                Status::Nok
            }
            None => Status::Ok,
        }
    }

    fn fix(rule: &UserRule, host: &Host, log: &mut Log) -> Status {
        let result = match rule.state {
            State::Absent => delete(rule, host, log),
            State::Present => apply(rule, host, log),
        };
        if let Err(e) = host.sync() {
            log.err(format!("user {}: committing the files: {e}", rule.name));
            return Status::Nok;
        }
        match result {
            Ok(()) => Status::Ok,
            Err(e) => {
                log.err(e);
                Status::Nok
            }
        }
    }
}

fn not_creatable(rule: &UserRule) -> String {
    format!(
        "user {}: missing from the {:?} database, which Tenet does not manage (only files)",
        rule.name,
        rule.db.as_deref().unwrap_or_default()
    )
}

/// The gid a rule's `gid` names, through the managed system's groups: the group must exist
/// (`useradd` and `usermod` refuse a gid no group has).
fn wanted_gid(owner: &Owner, accounts: &Accounts) -> Result<u32, String> {
    match owner {
        Owner::Id(id) => accounts
            .group_by_gid(*id)
            .map(|g| g.gid)
            .ok_or_else(|| format!("gid: no group has id {id} (not in /etc/group)")),
        Owner::Name(name) => accounts
            .group(name)
            .map(|g| g.gid)
            .ok_or_else(|| format!("gid: unknown group {name:?} (not in /etc/group)")),
    }
}

/// What differs between the rule and a present account (empty when it complies).
fn present_problems(
    rule: &UserRule,
    host: &HostView,
    accounts: &Accounts,
    log: &mut Log,
) -> Vec<String> {
    let name = &rule.name;
    let Some(u) = accounts.user(name) else {
        let more = if rule.creatable() {
            String::new()
        } else {
            format!(" (and {})", not_creatable(rule))
        };
        return vec![format!("user {name}: missing{more}")];
    };
    let mut problems = Vec::new();
    let mut compared: Vec<(&str, String, String)> = Vec::new();
    if let Some(uid) = rule.uid {
        compared.push(("uid", u.uid.to_string(), uid.to_string()));
    }
    if let Some(g) = &rule.gid {
        match wanted_gid(g, accounts) {
            Ok(gid) => compared.push(("gid", u.gid.to_string(), gid.to_string())),
            Err(e) => problems.push(format!("user {name}: {e}")),
        }
    }
    for (field, want, have) in [
        ("home", &rule.home, &u.home),
        ("shell", &rule.shell, &u.shell),
        ("gecos", &rule.gecos, &u.gecos),
    ] {
        if let Some(want) = want {
            compared.push((field, have.clone(), want.clone()));
        }
    }
    for (field, have, want) in compared {
        if have != want {
            problems.push(format!(
                "user {name}: {field} is {have:?}, expected {want:?}"
            ));
        }
    }
    if accounts.shadow.present() && accounts.shadow.get(name).is_none() {
        problems.push(format!("user {name}: no entry in /etc/shadow"));
    } else if let Some(want) = rule.hash() {
        if rule.initial_passwd {
            log.info(format!(
                "user {name}: password not checked (users_initial_passwd)"
            ));
        } else {
            let have = accounts.password(name).unwrap_or_default();
            // OpenSVC takes an empty hash for "!!".
            if have != want && !(want == "!!" && have.is_empty()) {
                problems.push(format!("user {name}: password hash differs from the rule's"));
            }
        }
    }
    if rule.check_home()
        && let Some(p) = home_problem(host, &u)
    {
        problems.push(format!("user {name}: {p}"));
    }
    problems
}

/// Why the home of `u` is not a directory of its own, if it is not.
fn home_problem(host: &HostView, u: &PasswdEntry) -> Option<String> {
    let path = match host.path(&u.home) {
        Ok(p) => p,
        Err(e) => return Some(format!("home: {e}")),
    };
    match host.metadata(&path) {
        Err(e) => Some(format!("home {}: {e}", u.home)),
        Ok(None) => Some(format!(
            "home {} is missing{}",
            u.home,
            common::through_link(host, &path)
        )),
        Ok(Some(m)) if !m.is_dir() => Some(format!(
            "home {} is {}, expected a directory",
            u.home,
            common::kind(&m)
        )),
        Ok(Some(m)) if m.uid() != u.uid => Some(format!(
            "home {} belongs to uid {}, expected {}",
            u.home,
            m.uid(),
            u.uid
        )),
        Ok(Some(_)) => None,
    }
}

/// What an account edit changed, for the home directory work after it.
struct Applied {
    entry: PasswdEntry,
    created: bool,
    old_uid: Option<u32>,
    old_gid: Option<u32>,
}

fn apply(rule: &UserRule, host: &Host, log: &mut Log) -> Result<(), String> {
    let name = &rule.name;
    let at = |e: String| format!("user {name}: {e}");
    let defs = Defs::load(host).map_err(at)?;
    let applied = Accounts::edit(host, log, |acc, log| match acc.user(name) {
        None if !rule.creatable() => Err(not_creatable(rule)),
        None => create(rule, acc, &defs, log).map_err(at),
        Some(u) => modify(rule, u, acc, &defs, log).map_err(at),
    })?;
    let u = &applied.entry;
    if applied.old_uid.is_some() || applied.old_gid.is_some() {
        carry_ownership(host, u, applied.old_uid, applied.old_gid, log).map_err(at)?;
    }
    let wants_home = rule.check_home() || (applied.created && rule.home.is_some());
    if wants_home {
        let path = host.path(&u.home).map_err(|e| at(format!("home: {e}")))?;
        match host.metadata(&path).map_err(|e| at(e.to_string()))? {
            None => {
                create_home(host, &defs, &path, u).map_err(at)?;
                log.info(format!(
                    "user {name}: home {} created from {}",
                    u.home,
                    defs.skel()
                ));
            }
            Some(m) if !m.is_dir() => {
                return Err(at(format!(
                    "home {} is {}; not replacing it",
                    u.home,
                    common::kind(&m)
                )));
            }
            Some(m) if rule.check_home() && m.uid() != u.uid => {
                host.set_owner(&path, Some(u.uid), Some(u.gid))
                    .map_err(|e| at(e.to_string()))?;
                log.info(format!(
                    "user {name}: home {} given to {}:{} (was uid {})",
                    u.home,
                    u.uid,
                    u.gid,
                    m.uid()
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn create(
    rule: &UserRule,
    acc: &mut Accounts,
    defs: &Defs,
    log: &mut Log,
) -> Result<Applied, String> {
    let name = &rule.name;
    let uid = match rule.uid {
        Some(uid) => {
            if let Some(other) = acc.user_by_uid(uid) {
                return Err(format!("uid {uid} is already {}'s", other.name));
            }
            uid
        }
        None => acc.free_uid(defs, None)?,
    };
    let mut new_group = None;
    let gid = match &rule.gid {
        Some(owner) => wanted_gid(owner, acc)?,
        None if defs.user_private_groups() => {
            if acc.group(name).is_some() {
                return Err(format!(
                    "a group {name} exists already (useradd refuses too): give its gid in \
                     the rule to make it the user's primary group"
                ));
            }
            let gid = acc.free_gid(defs, Some(uid))?;
            new_group = Some(gid);
            gid
        }
        None => {
            let g = defs.default_group();
            match g.parse::<u32>() {
                Ok(id) => id,
                Err(_) => acc.group(g).map(|e| e.gid).ok_or_else(|| {
                    format!("GROUP {g} of /etc/default/useradd is not in /etc/group")
                })?,
            }
        }
    };
    let hash = rule.hash().unwrap_or("!").to_owned();
    let shadowed = acc.shadow.present();
    let entry = PasswdEntry {
        name: name.clone(),
        passwd: if shadowed { "x".into() } else { hash.clone() },
        uid,
        gid,
        gecos: rule.gecos.clone().unwrap_or_default(),
        home: rule.home.clone().unwrap_or_else(|| {
            format!("{}/{name}", defs.home_base().trim_end_matches('/'))
        }),
        shell: rule.shell.clone().unwrap_or_else(|| defs.shell().to_owned()),
    };
    if let Some(gid) = new_group {
        acc.add_group(name, gid);
        log.info(format!("group {name}: created with gid {gid}"));
    }
    if shadowed {
        acc.shadow.put(defs.new_shadow_entry(name, &hash));
    }
    acc.passwd.put(entry.fields());
    log.info(format!(
        "user {name}: created (uid {uid}, gid {gid}, home {}, shell {})",
        entry.home, entry.shell
    ));
    Ok(Applied {
        entry,
        created: true,
        old_uid: None,
        old_gid: None,
    })
}

fn modify(
    rule: &UserRule,
    mut u: PasswdEntry,
    acc: &mut Accounts,
    defs: &Defs,
    log: &mut Log,
) -> Result<Applied, String> {
    let name = &rule.name;
    let (mut old_uid, mut old_gid) = (None, None);
    if let Some(uid) = rule.uid.filter(|uid| *uid != u.uid) {
        if let Some(other) = acc.user_by_uid(uid) {
            return Err(format!("uid {uid} is already {}'s", other.name));
        }
        log.info(format!("user {name}: uid {} -> {uid}", u.uid));
        old_uid = Some(u.uid);
        u.uid = uid;
    }
    if let Some(g) = &rule.gid {
        let gid = wanted_gid(g, acc)?;
        if gid != u.gid {
            log.info(format!("user {name}: gid {} -> {gid}", u.gid));
            old_gid = Some(u.gid);
            u.gid = gid;
        }
    }
    for (field, want, have) in [
        ("home", &rule.home, &mut u.home),
        ("shell", &rule.shell, &mut u.shell),
        ("gecos", &rule.gecos, &mut u.gecos),
    ] {
        if let Some(want) = want.as_ref().filter(|w| *w != have) {
            log.info(format!("user {name}: {field} {have:?} -> {want:?}"));
            *have = want.clone();
        }
    }
    if acc.shadow.present() && acc.shadow.get(name).is_none() {
        // As pwconv: the hash moves from passwd to a new shadow entry.
        let hash = match u.passwd.as_str() {
            "x" | "" => "!".to_owned(),
            h => h.to_owned(),
        };
        acc.shadow.put(defs.new_shadow_entry(name, &hash));
        u.passwd = "x".into();
        log.info(format!("user {name}: shadow entry added"));
    }
    acc.passwd.put(u.fields());
    if let Some(want) = rule.hash()
        && !rule.initial_passwd
    {
        let have = acc.password(name).unwrap_or_default();
        if have != want && !(want == "!!" && have.is_empty()) {
            acc.set_password(name, want, defs);
            log.info(format!("user {name}: password hash set"));
        }
    }
    Ok(Applied {
        entry: u,
        created: false,
        old_uid,
        old_gid,
    })
}

fn delete(rule: &UserRule, host: &Host, log: &mut Log) -> Result<(), String> {
    let name = &rule.name;
    let defs = Defs::load(host).map_err(|e| format!("user {name}: {e}"))?;
    Accounts::edit(host, log, |acc, log| {
        if let Some(why) = rule.protected(acc) {
            return Err(why);
        }
        let Some(u) = acc.user(name) else {
            return Ok(());
        };
        acc.passwd.remove(name);
        acc.shadow.remove(name);
        acc.remove_from_all_groups(name);
        // As userdel: the user's own group goes when nobody else has it as primary group.
        if defs.user_private_groups()
            && let Some(g) = acc.group(name)
            && g.gid == u.gid
            && g.members.is_empty()
            && !acc.users().any(|o| o.gid == g.gid)
        {
            acc.remove_group(name);
            log.info(format!("group {name}: removed (the user's own group)"));
        }
        log.info(format!(
            "user {name}: removed (uid {}; home {} kept)",
            u.uid, u.home
        ));
        Ok(())
    })
}

/// Makes a home as `useradd -m` does: the directory (`HOME_MODE`, or 0777 less `UMASK`), and a
/// copy of the skeleton, everything owned by the user.
fn create_home(host: &Host, defs: &Defs, home: &RootedPath, u: &PasswdEntry) -> Result<(), String> {
    let owner = (Some(u.uid), Some(u.gid));
    let err = |e: crate::Error| e.to_string();
    host.create_dir_all(home).map_err(err)?;
    host.set_owner(home, owner.0, owner.1).map_err(err)?;
    host.set_mode(home, defs.home_mode()).map_err(err)?;
    let skel = host.path(defs.skel()).map_err(err)?;
    if !host.metadata(&skel).map_err(err)?.is_some_and(|m| m.is_dir()) {
        return Ok(());
    }
    let mut stack = vec![(skel, home.clone())];
    let mut copied = 0;
    while let Some((from, to)) = stack.pop() {
        for name in host.read_dir_names(&from).map_err(err)?.unwrap_or_default() {
            copied += 1;
            if copied > MAX_SKEL_ENTRIES {
                return Err(format!(
                    "{} holds more than {MAX_SKEL_ENTRIES} entries; not copying it",
                    defs.skel()
                ));
            }
            let src = from.child(&name).map_err(|e| e.to_string())?;
            let dst = to.child(&name).map_err(|e| e.to_string())?;
            let Some(m) = host.metadata(&src).map_err(err)? else {
                continue;
            };
            let mode = m.mode() & 0o7777;
            if m.file_type().is_symlink() {
                if let Some(target) = host.read_link(&src).map_err(err)? {
                    host.symlink(&dst, &target).map_err(err)?;
                    host.set_owner(&dst, owner.0, owner.1).map_err(err)?;
                }
            } else if m.is_dir() {
                host.create_dir_all(&dst).map_err(err)?;
                host.set_owner(&dst, owner.0, owner.1).map_err(err)?;
                host.set_mode(&dst, mode).map_err(err)?;
                stack.push((src, dst));
            } else if m.is_file() {
                let content = host.read(&src).map_err(err)?.unwrap_or_default();
                host.write_atomic(&dst, &content, Some(mode), Some(owner))
                    .map_err(err)?;
            }
        }
    }
    Ok(())
}

/// After a uid or gid change, gives the files of the home that had the old id the new one
/// (what `usermod -u` / `-g` do), links included, never following them.
fn carry_ownership(
    host: &Host,
    u: &PasswdEntry,
    old_uid: Option<u32>,
    old_gid: Option<u32>,
    log: &mut Log,
) -> Result<(), String> {
    let err = |e: crate::Error| e.to_string();
    let home = host.path(&u.home).map_err(err)?;
    if !host.metadata(&home).map_err(err)?.is_some_and(|m| m.is_dir()) {
        return Ok(());
    }
    let mut changed = 0u64;
    let mut stack = vec![home];
    while let Some(path) = stack.pop() {
        let Some(m) = host.metadata(&path).map_err(err)? else {
            continue;
        };
        let uid = old_uid.filter(|o| *o == m.uid()).map(|_| u.uid);
        let gid = old_gid.filter(|o| *o == m.gid()).map(|_| u.gid);
        if uid.is_some() || gid.is_some() {
            host.set_owner(&path, uid, gid).map_err(err)?;
            changed += 1;
        }
        // `metadata` does not follow links: a link to a directory is not descended into.
        if m.is_dir() {
            for name in host.read_dir_names(&path).map_err(err)?.unwrap_or_default() {
                stack.push(path.child(&name).map_err(|e| e.to_string())?);
            }
        }
    }
    log.info(format!(
        "user {}: {changed} file(s) of {} given the new ids",
        u.name, u.home
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_class_contract, check, fix};
    use serde_json::json;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    pub(crate) const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n";
    const SHADOW: &str = "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n";
    const GROUP: &str = "root:x:0:\ndaemon:x:1:\nshadow:x:42:\nusers:x:100:\n";
    const GSHADOW: &str = "root:*::\ndaemon:*::\nshadow:*::\nusers:*::\n";

    /// A root with the four databases, Debian's login.defs essentials, a skeleton and the
    /// shells the examples use.
    fn root() -> (tempfile::TempDir, Host) {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for d in ["etc/skel/.config", "root", "bin", "home"] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        for (f, text, mode) in [
            ("etc/passwd", PASSWD, 0o644),
            ("etc/shadow", SHADOW, 0o640),
            ("etc/group", GROUP, 0o644),
            ("etc/gshadow", GSHADOW, 0o640),
            (
                "etc/login.defs",
                "UMASK 022\nUID_MIN 1000\nUID_MAX 60000\nGID_MIN 1000\nGID_MAX 60000\n\
                 PASS_MAX_DAYS 99999\nPASS_MIN_DAYS 0\nPASS_WARN_AGE 7\nUSERGROUPS_ENAB yes\n",
                0o644,
            ),
            ("etc/skel/.profile", "# profile\n", 0o644),
            ("etc/skel/.config/x", "x\n", 0o600),
            ("bin/sh", "", 0o755),
            ("bin/bash", "", 0o755),
        ] {
            fs::write(r.join(f), text).unwrap();
            fs::set_permissions(r.join(f), fs::Permissions::from_mode(mode)).unwrap();
        }
        let h = Host::new(r).with_var_dir(r.join("var/lib/tenet"));
        (dir, h)
    }

    fn read(dir: &Path, f: &str) -> String {
        fs::read_to_string(dir.join(f)).unwrap_or_default()
    }

    #[test]
    fn a_missing_user_is_created_as_useradd_would() {
        let (dir, h) = root();
        let log = assert_class_contract::<User>(
            &h,
            &[dir.path()],
            json!({"tibco": {"shell": "/bin/sh", "gecos": "agecos"}}),
        );
        assert!(log.iter().any(|l| l == "user tibco: missing"), "{log:?}");
        let r = dir.path();
        assert!(
            read(r, "etc/passwd").ends_with("tibco:x:1000:1000:agecos:/home/tibco:/bin/sh\n"),
            "{}",
            read(r, "etc/passwd")
        );
        let day = accounts::today();
        assert!(
            read(r, "etc/shadow").ends_with(&format!("tibco:!:{day}:0:99999:7:::\n")),
            "{}",
            read(r, "etc/shadow")
        );
        assert!(read(r, "etc/group").ends_with("users:x:100:\ntibco:x:1000:\n"));
        assert!(read(r, "etc/gshadow").ends_with("tibco:!::\n"));
        assert_eq!(read(r, "etc/passwd-"), PASSWD);
        assert_eq!(read(r, "etc/shadow-"), SHADOW);
        let home = fs::metadata(r.join("home/tibco")).unwrap();
        assert_eq!((home.uid(), home.gid(), home.mode() & 0o7777), (1000, 1000, 0o755));
        let x = fs::metadata(r.join("home/tibco/.config/x")).unwrap();
        assert_eq!((x.uid(), x.mode() & 0o777), (1000, 0o600));
        assert_eq!(read(r, "home/tibco/.profile"), "# profile\n");
        for f in ["etc/shadow", "etc/shadow-", "etc/gshadow"] {
            let m = fs::metadata(r.join(f)).unwrap().mode() & 0o777;
            assert_eq!(m, 0o640, "{f}");
        }
    }

    #[test]
    fn properties_are_changed_and_ownership_follows_the_uid() {
        let (dir, h) = root();
        let r = dir.path();
        fs::write(
            r.join("etc/passwd"),
            format!("{PASSWD}bob:x:1000:100:Bob:/home/bob:/bin/sh\n"),
        )
        .unwrap();
        fs::write(
            r.join("etc/shadow"),
            format!("{SHADOW}bob:$6$old:19000:0:99999:7:::\n"),
        )
        .unwrap();
        fs::create_dir_all(r.join("home/bob/sub")).unwrap();
        fs::write(r.join("home/bob/sub/f"), "").unwrap();
        fs::write(r.join("home/bob/other"), "").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", r.join("home/bob/link")).unwrap();
        for p in ["home/bob", "home/bob/sub", "home/bob/sub/f", "home/bob/link"] {
            std::os::unix::fs::lchown(r.join(p), Some(1000), Some(100)).unwrap();
        }
        std::os::unix::fs::lchown(r.join("home/bob/other"), Some(5), Some(5)).unwrap();
        let log = assert_class_contract::<User>(
            &h,
            &[r],
            json!({"name": "bob", "uid": "1500", "gid": "daemon", "shell": "/bin/bash",
                   "password": "$6$new", "gecos": "Robert"}),
        );
        for want in ["uid is \"1000\", expected \"1500\"", "gecos is \"Bob\"", "password hash differs"] {
            assert!(log.iter().any(|l| l.contains(want)), "{want}: {log:?}");
        }
        // The hash itself is never logged.
        assert!(log.iter().all(|l| !l.contains("$6$")), "{log:?}");
        assert!(read(r, "etc/passwd").ends_with("bob:x:1500:1:Robert:/home/bob:/bin/bash\n"));
        // As usermod -p: the last change is today.
        let day = accounts::today();
        assert!(
            read(r, "etc/shadow").ends_with(&format!("bob:$6$new:{day}:0:99999:7:::\n")),
            "{}",
            read(r, "etc/shadow")
        );
        for p in ["home/bob", "home/bob/sub", "home/bob/sub/f", "home/bob/link"] {
            let m = fs::symlink_metadata(r.join(p)).unwrap();
            assert_eq!((m.uid(), m.gid()), (1500, 1), "{p}");
        }
        let other = fs::metadata(r.join("home/bob/other")).unwrap();
        assert_eq!((other.uid(), other.gid()), (5, 5));
        // The link was not followed: /etc/passwd keeps its owner.
        assert_eq!(fs::metadata(r.join("etc/passwd")).unwrap().uid(), 0);
    }

    #[test]
    fn absent_removes_the_account_its_memberships_and_own_group() {
        let (dir, h) = root();
        let r = dir.path();
        fs::write(
            r.join("etc/passwd"),
            format!("{PASSWD}old:x:1000:1000::/home/old:/bin/sh\n"),
        )
        .unwrap();
        fs::write(r.join("etc/shadow"), format!("{SHADOW}old:!:19000:0:99999:7:::\n")).unwrap();
        fs::write(
            r.join("etc/group"),
            "root:x:0:\ndaemon:x:1:old\nshadow:x:42:\nusers:x:100:old,x\nold:x:1000:\n",
        )
        .unwrap();
        fs::write(
            r.join("etc/gshadow"),
            "root:*::\ndaemon:*:old:old\nshadow:*::\nusers:*::old,x\nold:!::\n",
        )
        .unwrap();
        fs::create_dir_all(r.join("home/old")).unwrap();
        assert_class_contract::<User>(&h, &[r], json!({"-old": {}}));
        assert_eq!(read(r, "etc/passwd"), PASSWD);
        assert_eq!(read(r, "etc/shadow"), SHADOW);
        assert_eq!(
            read(r, "etc/group"),
            "root:x:0:\ndaemon:x:1:\nshadow:x:42:\nusers:x:100:x\n"
        );
        assert_eq!(
            read(r, "etc/gshadow"),
            "root:*::\ndaemon:*::\nshadow:*::\nusers:*::x\n"
        );
        assert!(r.join("home/old").is_dir(), "the home stays");
    }

    #[test]
    fn system_accounts_are_not_deleted() {
        let (dir, h) = root();
        let before = crate::testing::snapshot(dir.path());
        for rule in [json!({"-daemon": {}}), json!({"name": "root", "state": "absent"})] {
            let (st, _) = check::<User>(&h, rule.clone());
            assert_eq!(st, Status::Nok);
            let (st, log) = fix::<User>(&h, rule);
            assert_eq!(st, Status::Nok);
            assert!(log.iter().any(|l| l.contains("refusing to delete")), "{log:?}");
        }
        fs::write(
            dir.path().join("etc/passwd"),
            format!("{PASSWD}toor:x:0:0::/root:/bin/sh\n"),
        )
        .unwrap();
        let (st, log) = fix::<User>(&h, json!({"-toor": {}}));
        assert_eq!(st, Status::Nok);
        assert!(log.iter().any(|l| l.contains("uid 0")), "{log:?}");
        let after = crate::testing::snapshot(dir.path());
        let d: Vec<_> = crate::testing::diff_snapshots(&before, &after)
            .into_iter()
            .filter(|d| !d.contains("etc/passwd"))
            .collect();
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn a_used_uid_or_unknown_group_is_refused_and_nothing_written() {
        let (dir, h) = root();
        let passwd = read(dir.path(), "etc/passwd");
        let (st, log) = fix::<User>(&h, json!({"tibco": {"uid": 1}}));
        assert_eq!(st, Status::Nok);
        assert!(log.iter().any(|l| l.contains("uid 1 is already daemon's")), "{log:?}");
        let (st, log) = fix::<User>(&h, json!({"tibco": {"gid": "nogroup"}}));
        assert_eq!(st, Status::Nok);
        assert!(log.iter().any(|l| l.contains("unknown group \"nogroup\"")), "{log:?}");
        // An existing account is not given a gid no group has either (usermod -g refuses it).
        let (st, log) = fix::<User>(&h, json!({"daemon": {"gid": 4242, "check_home": "no"}}));
        assert_eq!(st, Status::Nok);
        assert!(log.iter().any(|l| l.contains("no group has id 4242")), "{log:?}");
        assert_eq!(read(dir.path(), "etc/passwd"), passwd);
        assert!(!dir.path().join("etc/passwd-").exists());
    }

    #[test]
    fn bad_rules_name_the_field() {
        for (rule, want) in [
            (json!({"tibco": {"shel": "/bin/sh"}}), "user tibco: unknown field `shel`"),
            (json!({"tibco": {"uid": "abc"}}), "user tibco: invalid id \"abc\""),
            (json!({"tibco": {"gecos": "a:b"}}), "user tibco: gecos:"),
            (json!({"tibco": {"home": "rel/x"}}), "user tibco: home:"),
            (json!({"ti:bco": {}}), "user ti:bco: name: invalid name"),
            (json!({"tibco": {"check_home": "maybe"}}), "user tibco: invalid value \"maybe\""),
            (json!({"tibco": {"name": "x"}}), "field `name` is not allowed"),
            (json!({"name": "x", "state": "gone"}), "user x: unknown variant `gone`"),
        ] {
            let err = User::rules(&rule).unwrap_err();
            assert!(err.contains(want), "{rule}: {err}");
        }
    }

    #[test]
    fn the_password_is_left_alone_in_initial_passwd_mode() {
        let (dir, h) = root();
        let r = dir.path();
        fs::write(r.join("etc/passwd"), format!("{PASSWD}bob:x:1000:100::/root:/bin/sh\n")).unwrap();
        fs::write(r.join("etc/shadow"), format!("{SHADOW}bob:$6$user:19000::::::\n")).unwrap();
        let mut data = serde_json::Map::new();
        data.insert("users_initial_passwd".into(), json!(true));
        let ctx = RuleContext::new(tenet_templates::Library::shared_builtin(), data);
        let rule = json!({"bob": {"password": "$6$initial", "check_home": "no"}});
        let (st, log) = crate::testing::check_in::<User>(&ctx, &h, rule.clone());
        assert_eq!(st, Status::Ok, "{log:?}");
        let (st, _) = check::<User>(&h, rule);
        assert_eq!(st, Status::Nok);
    }
}
