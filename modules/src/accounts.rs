//! The local account databases of the managed system (`/etc/passwd`, `/etc/shadow`,
//! `/etc/group`, `/etc/gshadow`), read and edited under the root prefix the way shadow-utils
//! (`useradd`, `usermod`, `groupadd`, ...) edits them, without running them and without a
//! chroot. Used by the `user`, `group`, `group_membership` and `authkey` classes.
//!
//! # Editing as shadow-utils does
//!
//! [`Accounts::edit`] takes the same locks as shadow-utils, in the same order: the
//! `lckpwdf(3)` lock (a `fcntl` write lock on `/etc/.pwd.lock`, created 0600 and left in
//! place, waited for up to 15 s), then one `<file>.lock` per database holding the process id
//! (a stale one, whose process is gone, is replaced). Under the locks it reads the files again,
//! applies the change, and for every file that changed writes `<file>-` (the previous content,
//! with the previous mode and owner: shadow-utils' backup) and the new file, each atomically
//! (a temporary file renamed over it, fsynced; `Host::write_atomic`), mode and owner kept
//! (`shadow` stays 0640 root:shadow or whatever it was). The batch is committed before the
//! locks are released, so a tool taking the locks next sees the new files.
//!
//! Lines are kept as they are: comments, blank lines, NIS `+`/`-` entries and lines that are
//! not well-formed entries pass through untouched, in place, and so do the fields of an entry a
//! change does not touch. New entries go at the end (before NIS entries, as shadow-utils
//! does). Names and fields are validated before anything is written: a `:` or a newline in a
//! field would corrupt the database.
//!
//! `login.defs` and `/etc/default/useradd` of the managed system give the defaults
//! `useradd` would use (id ranges, password ageing, home base, shell, user private groups).
//!
//! **Invariant:** reaches files only through [`crate::host`] (held to the classes'
//! root-containment scan).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use crate::host::{Host, HostView};
use crate::status::Log;

/// One of the four databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Db {
    /// `/etc/passwd`: `name:passwd:uid:gid:gecos:home:shell`.
    Passwd,
    /// `/etc/shadow`: `name:hash:lastchg:min:max:warn:inactive:expire:reserved`.
    Shadow,
    /// `/etc/group`: `name:passwd:gid:members`.
    Group,
    /// `/etc/gshadow`: `name:hash:admins:members`.
    Gshadow,
}

impl Db {
    /// Every database, in the order changes are committed: groups before the users that
    /// name them, shadow entries before the passwd entries that point to them.
    const ALL: [Db; 4] = [Db::Group, Db::Gshadow, Db::Shadow, Db::Passwd];

    /// The database's path in the managed system.
    pub(crate) fn path(self) -> &'static str {
        match self {
            Db::Passwd => "/etc/passwd",
            Db::Shadow => "/etc/shadow",
            Db::Group => "/etc/group",
            Db::Gshadow => "/etc/gshadow",
        }
    }

    /// Fields per entry.
    fn fields(self) -> usize {
        match self {
            Db::Passwd => 7,
            Db::Shadow => 9,
            Db::Group | Db::Gshadow => 4,
        }
    }
}

/// One line of a database file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    /// A well-formed entry, split on `:`.
    Entry(Vec<String>),
    /// Anything else (comment, blank, NIS, malformed, not UTF-8), kept byte for byte.
    Other(Vec<u8>),
}

/// A database file as read, and as edited.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    db: Db,
    lines: Vec<Line>,
    /// The file as read (`None`: it does not exist), for the `-` backup.
    original: Option<Vec<u8>>,
    /// Mode and owner of the file as read.
    meta: Option<(u32, u32, u32)>,
    /// Whether the path is a symbolic link (read through it, never written).
    link: bool,
    changed: bool,
}

impl Table {
    fn parse(db: Db, bytes: Option<Vec<u8>>, meta: Option<(u32, u32, u32)>) -> Table {
        let mut lines = Vec::new();
        if let Some(bytes) = &bytes {
            let mut rest: &[u8] = bytes;
            while !rest.is_empty() {
                let (line, next) = match rest.iter().position(|b| *b == b'\n') {
                    Some(i) => (&rest[..i], &rest[i + 1..]),
                    None => (rest, &rest[rest.len()..]),
                };
                rest = next;
                let entry = std::str::from_utf8(line).ok().and_then(|text| {
                    let fields: Vec<String> = text.split(':').map(str::to_owned).collect();
                    let ok = fields.len() == db.fields()
                        && !fields[0].is_empty()
                        && !fields[0].starts_with(['+', '-', '#'])
                        && !fields[0].contains(char::is_whitespace);
                    ok.then_some(fields)
                });
                lines.push(match entry {
                    Some(fields) => Line::Entry(fields),
                    None => Line::Other(line.to_vec()),
                });
            }
        }
        Table {
            db,
            lines,
            original: bytes,
            meta,
            link: false,
            changed: false,
        }
    }

    /// Whether the file exists (or will, once a change is committed).
    pub(crate) fn present(&self) -> bool {
        self.original.is_some() || self.changed
    }

    /// The entries, in file order.
    pub(crate) fn entries(&self) -> impl Iterator<Item = &[String]> {
        self.lines.iter().filter_map(|l| match l {
            Line::Entry(f) => Some(f.as_slice()),
            Line::Other(_) => None,
        })
    }

    /// The first entry named `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&[String]> {
        self.entries().find(|f| f[0] == name)
    }

    /// Replaces the first entry named like `fields` (the others are left, as shadow-utils
    /// leaves duplicates to pwck), or adds it at the end, before NIS entries.
    pub(crate) fn put(&mut self, fields: Vec<String>) {
        debug_assert_eq!(fields.len(), self.db.fields());
        if let Some(Line::Entry(f)) = self
            .lines
            .iter_mut()
            .find(|l| matches!(l, Line::Entry(f) if f[0] == fields[0]))
        {
            if *f != fields {
                *f = fields;
                self.changed = true;
            }
            return;
        }
        let nis = self
            .lines
            .iter()
            .position(|l| matches!(l, Line::Other(b) if b.starts_with(b"+") || b.starts_with(b"-")))
            .unwrap_or(self.lines.len());
        self.lines.insert(nis, Line::Entry(fields));
        self.changed = true;
    }

    /// Changes the first entry named `name` with `f`; false when there is none.
    pub(crate) fn update(&mut self, name: &str, f: impl FnOnce(&mut Vec<String>)) -> bool {
        let Some(Line::Entry(fields)) = self
            .lines
            .iter_mut()
            .find(|l| matches!(l, Line::Entry(f) if f[0] == name))
        else {
            return false;
        };
        let before = fields.clone();
        f(fields);
        if *fields != before {
            self.changed = true;
        }
        true
    }

    /// Removes every entry named `name`; whether there was one.
    pub(crate) fn remove(&mut self, name: &str) -> bool {
        let before = self.lines.len();
        self.lines
            .retain(|l| !matches!(l, Line::Entry(f) if f[0] == name));
        let removed = self.lines.len() != before;
        self.changed |= removed;
        removed
    }

    fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for line in &self.lines {
            match line {
                Line::Entry(f) => out.extend_from_slice(f.join(":").as_bytes()),
                Line::Other(b) => out.extend_from_slice(b),
            }
            out.push(b'\n');
        }
        out
    }
}

/// A passwd entry, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PasswdEntry {
    /// Login name.
    pub(crate) name: String,
    /// Password field (`x` when the hash is in shadow).
    pub(crate) passwd: String,
    /// User id.
    pub(crate) uid: u32,
    /// Primary group id.
    pub(crate) gid: u32,
    /// Comment.
    pub(crate) gecos: String,
    /// Home directory.
    pub(crate) home: String,
    /// Login shell.
    pub(crate) shell: String,
}

impl PasswdEntry {
    fn from_fields(f: &[String]) -> Option<PasswdEntry> {
        Some(PasswdEntry {
            name: f[0].clone(),
            passwd: f[1].clone(),
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            gecos: f[4].clone(),
            home: f[5].clone(),
            shell: f[6].clone(),
        })
    }

    pub(crate) fn fields(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.passwd.clone(),
            self.uid.to_string(),
            self.gid.to_string(),
            self.gecos.clone(),
            self.home.clone(),
            self.shell.clone(),
        ]
    }
}

/// A group entry, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupEntry {
    /// Group name.
    pub(crate) name: String,
    /// Group id.
    pub(crate) gid: u32,
    /// Supplementary members.
    pub(crate) members: Vec<String>,
}

impl GroupEntry {
    fn from_fields(f: &[String]) -> Option<GroupEntry> {
        Some(GroupEntry {
            name: f[0].clone(),
            gid: f[2].parse().ok()?,
            members: split_members(&f[3]),
        })
    }
}

/// A comma-separated member list (empty items dropped).
pub(crate) fn split_members(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The four databases of the managed system.
#[derive(Debug, Clone)]
pub(crate) struct Accounts {
    /// `/etc/passwd`.
    pub(crate) passwd: Table,
    /// `/etc/shadow`.
    pub(crate) shadow: Table,
    /// `/etc/group`.
    pub(crate) group: Table,
    /// `/etc/gshadow`.
    pub(crate) gshadow: Table,
}

/// How long to wait for the `lckpwdf` lock: what `lckpwdf(3)` waits.
const LOCK_WAIT: Duration = Duration::from_secs(15);

impl Accounts {
    /// Reads the databases (a missing file is an empty database).
    pub(crate) fn load(view: &HostView) -> Result<Accounts, String> {
        let read = |db: Db| -> Result<Table, String> {
            let path = view.path(db.path()).map_err(|e| e.to_string())?;
            let Some(m) = view.metadata(&path).map_err(|e| e.to_string())? else {
                return Ok(Table::parse(db, None, None));
            };
            // A link is read through (inside the root prefix, as the C library would), but
            // never written through: `edit` refuses it.
            let link = m.file_type().is_symlink();
            if !m.is_file() && !link {
                let kind = if m.is_dir() {
                    "a directory"
                } else {
                    "a special file"
                };
                return Err(format!("{} is {kind}, not a file", db.path()));
            }
            let bytes = view.read(&path).map_err(|e| e.to_string())?;
            let mut table = Table::parse(db, bytes, Some((m.mode() & 0o7777, m.uid(), m.gid())));
            table.link = link;
            Ok(table)
        };
        Ok(Accounts {
            passwd: read(Db::Passwd)?,
            shadow: read(Db::Shadow)?,
            group: read(Db::Group)?,
            gshadow: read(Db::Gshadow)?,
        })
    }

    fn table(&self, db: Db) -> &Table {
        match db {
            Db::Passwd => &self.passwd,
            Db::Shadow => &self.shadow,
            Db::Group => &self.group,
            Db::Gshadow => &self.gshadow,
        }
    }

    /// Locks the databases as shadow-utils does, reads them, lets `change` edit them, writes
    /// the files that changed (each with its `-` backup) and commits, then unlocks. Nothing
    /// is written when `change` fails. Returns what `change` returned.
    ///
    /// `change` is first tried on the databases as they are, without locks and quietly: when
    /// it fails or changes nothing, it is run once more for its messages and result, and no
    /// lock is taken (a refusal or a rule already met touches nothing, not even the lock
    /// file). Otherwise it runs again, for real, on what the databases hold under the locks.
    pub(crate) fn edit<T>(
        host: &Host,
        log: &mut Log,
        change: impl Fn(&mut Accounts, &mut Log) -> Result<T, String>,
    ) -> Result<T, String> {
        let mut trial = Accounts::load(host.view())?;
        let tried = change(&mut trial, &mut Log::quiet());
        if tried.is_err() || Db::ALL.iter().all(|db| !trial.table(*db).changed) {
            return change(&mut Accounts::load(host.view())?, log);
        }
        let path = |p: &str| host.path(p).map_err(|e| e.to_string());
        let _pwd_lock = host
            .lock_file(&path("/etc/.pwd.lock")?, LOCK_WAIT)
            .map_err(|e| format!("cannot lock the account databases: {e}"))?;
        let mut file_locks = Vec::new();
        for db in Db::ALL {
            file_locks.push(
                host.pid_lock(&path(&format!("{}.lock", db.path()))?)
                    .map_err(|e| format!("cannot lock {}: {e}", db.path()))?,
            );
        }
        let mut accounts = Accounts::load(host.view())?;
        let out = change(&mut accounts, log)?;
        for db in Db::ALL {
            let table = accounts.table(db);
            if table.changed && table.link {
                return Err(format!(
                    "{} is a symbolic link; not replacing it with a file (edit its target)",
                    db.path()
                ));
            }
        }
        for db in Db::ALL {
            let table = accounts.table(db);
            if !table.changed {
                continue;
            }
            let target = path(db.path())?;
            if let (Some(old), Some((mode, uid, gid))) = (&table.original, table.meta) {
                let backup = path(&format!("{}-", db.path()))?;
                host.write_atomic(&backup, old, Some(mode), Some((Some(uid), Some(gid))))
                    .map_err(|e| format!("cannot write the backup {}-: {e}", db.path()))?;
            }
            // A new file gets what shadow-utils gives one; an existing one keeps its own.
            let (mode, owner) = match table.meta {
                Some(_) => (None, None),
                None => (Some(0o644), Some((Some(0), Some(0)))),
            };
            host.write_atomic(&target, &table.render(), mode, owner)
                .map_err(|e| format!("cannot write {}: {e}", db.path()))?;
        }
        host.sync()
            .map_err(|e| format!("committing the account databases: {e}"))?;
        drop(file_locks);
        Ok(out)
    }

    /// The passwd entry of `name`.
    pub(crate) fn user(&self, name: &str) -> Option<PasswdEntry> {
        self.passwd.get(name).and_then(PasswdEntry::from_fields)
    }

    /// The passwd entry with uid `uid`.
    pub(crate) fn user_by_uid(&self, uid: u32) -> Option<PasswdEntry> {
        self.users().find(|u| u.uid == uid)
    }

    /// Every passwd entry.
    pub(crate) fn users(&self) -> impl Iterator<Item = PasswdEntry> + '_ {
        self.passwd.entries().filter_map(PasswdEntry::from_fields)
    }

    /// The group entry of `name`.
    pub(crate) fn group(&self, name: &str) -> Option<GroupEntry> {
        self.group.get(name).and_then(GroupEntry::from_fields)
    }

    /// The group entry with gid `gid`.
    pub(crate) fn group_by_gid(&self, gid: u32) -> Option<GroupEntry> {
        self.groups().find(|g| g.gid == gid)
    }

    /// Every group entry.
    pub(crate) fn groups(&self) -> impl Iterator<Item = GroupEntry> + '_ {
        self.group.entries().filter_map(GroupEntry::from_fields)
    }

    /// The password hash of `name`: from shadow when the shadow file exists (`None` when the
    /// user has no shadow entry), else the passwd field.
    pub(crate) fn password(&self, name: &str) -> Option<String> {
        if self.shadow.present() {
            self.shadow.get(name).map(|f| f[1].clone())
        } else {
            self.user(name).map(|u| u.passwd)
        }
    }

    /// Sets the password hash of an existing user as `usermod -p` does: in shadow when the
    /// shadow file exists, today becoming the last change (an entry is added if the user has
    /// none), else in passwd.
    pub(crate) fn set_password(&mut self, name: &str, hash: &str, defs: &Defs) {
        if self.shadow.present() {
            let updated = self.shadow.update(name, |f| {
                f[1] = hash.to_owned();
                f[2] = today().to_string();
            });
            if !updated {
                self.shadow.put(defs.new_shadow_entry(name, hash));
            }
        } else {
            self.passwd.update(name, |f| f[1] = hash.to_owned());
        }
    }

    /// Adds the group `name` with `gid` as `groupadd` does: `name:x:gid:` (`!` as the
    /// password when there is no gshadow) and `name:!::` in gshadow when it exists.
    pub(crate) fn add_group(&mut self, name: &str, gid: u32) {
        let shadowed = self.gshadow.present();
        self.group.put(vec![
            name.to_owned(),
            if shadowed { "x" } else { "!" }.to_owned(),
            gid.to_string(),
            String::new(),
        ]);
        if shadowed {
            self.gshadow.put(vec![
                name.to_owned(),
                "!".to_owned(),
                String::new(),
                String::new(),
            ]);
        }
    }

    /// Removes the group `name` from group and gshadow.
    pub(crate) fn remove_group(&mut self, name: &str) {
        self.group.remove(name);
        self.gshadow.remove(name);
    }

    /// Adds `user` to the members of `group` (group and gshadow, as `usermod -a -G`).
    pub(crate) fn add_member(&mut self, group: &str, user: &str) {
        let add = |list: &mut String| {
            let mut members = split_members(list);
            if !members.iter().any(|m| m == user) {
                members.push(user.to_owned());
                *list = members.join(",");
            }
        };
        self.group.update(group, |f| add(&mut f[3]));
        self.gshadow.update(group, |f| add(&mut f[3]));
    }

    /// Removes `user` from every group's members, and from gshadow's members and
    /// administrators (as `userdel`).
    pub(crate) fn remove_from_all_groups(&mut self, user: &str) {
        let strip = |list: &mut String| {
            let members = split_members(list);
            if members.iter().any(|m| m == user) {
                *list = members
                    .into_iter()
                    .filter(|m| m != user)
                    .collect::<Vec<_>>()
                    .join(",");
            }
        };
        let names: Vec<String> = self.group.entries().map(|f| f[0].clone()).collect();
        for g in &names {
            self.group.update(g, |f| strip(&mut f[3]));
        }
        let names: Vec<String> = self.gshadow.entries().map(|f| f[0].clone()).collect();
        for g in &names {
            self.gshadow.update(g, |f| {
                strip(&mut f[2]);
                strip(&mut f[3]);
            });
        }
    }

    /// A free user id as `useradd` picks one: `preferred` when free and given, else one more
    /// than the highest id in use within `UID_MIN`..=`UID_MAX`, else the lowest free one there.
    pub(crate) fn free_uid(&self, defs: &Defs, preferred: Option<u32>) -> Result<u32, String> {
        let used: Vec<u32> = self.users().map(|u| u.uid).collect();
        let (min, max) = defs.range("UID");
        free_id(&used, min, max, preferred)
            .ok_or_else(|| format!("no free user id between UID_MIN {min} and UID_MAX {max}"))
    }

    /// A free group id as `groupadd` picks one (see [`Accounts::free_uid`]), in
    /// `GID_MIN`..=`GID_MAX`.
    pub(crate) fn free_gid(&self, defs: &Defs, preferred: Option<u32>) -> Result<u32, String> {
        let used: Vec<u32> = self.groups().map(|g| g.gid).collect();
        let (min, max) = defs.range("GID");
        free_id(&used, min, max, preferred)
            .ok_or_else(|| format!("no free group id between GID_MIN {min} and GID_MAX {max}"))
    }
}

fn free_id(used: &[u32], min: u32, max: u32, preferred: Option<u32>) -> Option<u32> {
    if let Some(p) = preferred.filter(|p| (min..=max).contains(p) && !used.contains(p)) {
        return Some(p);
    }
    let highest = used
        .iter()
        .copied()
        .filter(|u| (min..=max).contains(u))
        .max();
    match highest {
        None if min <= max => Some(min),
        Some(h) if h < max => Some(h + 1),
        _ => (min..=max).find(|id| !used.contains(id)),
    }
}

/// The defaults `useradd` reads: `/etc/login.defs` and `/etc/default/useradd` of the managed
/// system.
#[derive(Debug, Clone, Default)]
pub(crate) struct Defs {
    login: HashMap<String, String>,
    useradd: HashMap<String, String>,
}

impl Defs {
    /// Reads both files (missing ones give shadow-utils' built-in defaults).
    pub(crate) fn load(view: &HostView) -> Result<Defs, String> {
        let read = |p: &str| -> Result<String, String> {
            let path = view.path(p).map_err(|e| e.to_string())?;
            Ok(view
                .read(&path)
                .map_err(|e| e.to_string())?
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default())
        };
        let mut login = HashMap::new();
        for line in read("/etc/login.defs")?.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            if let (Some(k), Some(v)) = (words.next(), words.next()) {
                login.insert(k.to_owned(), v.trim_matches('"').to_owned());
            }
        }
        let mut useradd = HashMap::new();
        for line in read("/etc/default/useradd")?.lines() {
            let line = line.trim();
            if line.starts_with('#') {
                continue;
            }
            if let Some((k, v)) = line.split_once('=') {
                useradd.insert(k.trim().to_owned(), v.trim().trim_matches('"').to_owned());
            }
        }
        Ok(Defs { login, useradd })
    }

    /// A number of login.defs (decimal, `0` octal or `0x` hex, as `strtol(.., 0)` reads it).
    pub(crate) fn num(&self, key: &str) -> Option<i64> {
        let v = self.login.get(key)?;
        let (neg, v) = match v.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, v.as_str()),
        };
        let n = if let Some(hex) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
            i64::from_str_radix(hex, 16).ok()?
        } else if v.len() > 1 && v.starts_with('0') {
            i64::from_str_radix(&v[1..], 8).ok()?
        } else {
            v.parse().ok()?
        };
        Some(if neg { -n } else { n })
    }

    /// A yes/no of login.defs (`None` when absent).
    pub(crate) fn yes(&self, key: &str) -> Option<bool> {
        self.login.get(key).map(|v| v.eq_ignore_ascii_case("yes"))
    }

    /// A value of `/etc/default/useradd`.
    pub(crate) fn useradd(&self, key: &str) -> Option<&str> {
        self.useradd
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// `UID_MIN`..`UID_MAX` or `GID_MIN`..`GID_MAX` (1000..60000 by default).
    fn range(&self, what: &str) -> (u32, u32) {
        let get = |k: &str, d: u32| {
            self.num(&format!("{what}_{k}"))
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(d)
        };
        (get("MIN", 1000), get("MAX", 60000))
    }

    /// Whether `useradd` makes a group of the user's name when no group is given
    /// (`USERGROUPS_ENAB`, off when login.defs does not say).
    pub(crate) fn user_private_groups(&self) -> bool {
        self.yes("USERGROUPS_ENAB").unwrap_or(false)
    }

    /// The primary group of a new user without user private groups: `GROUP` of
    /// `/etc/default/useradd` (a name or an id), 100 by default (`users`).
    pub(crate) fn default_group(&self) -> &str {
        self.useradd("GROUP").unwrap_or("100")
    }

    /// Where new homes go: `HOME` of `/etc/default/useradd`, `/home` by default.
    pub(crate) fn home_base(&self) -> &str {
        self.useradd("HOME").unwrap_or("/home")
    }

    /// The shell of new users: `SHELL` of `/etc/default/useradd`, `/bin/bash` without it
    /// (shadow-utils' built-in default).
    pub(crate) fn shell(&self) -> &str {
        self.useradd("SHELL").unwrap_or("/bin/bash")
    }

    /// The skeleton directory: `SKEL` of `/etc/default/useradd`, `/etc/skel` by default.
    pub(crate) fn skel(&self) -> &str {
        self.useradd("SKEL").unwrap_or("/etc/skel")
    }

    /// The mode of a new home: `HOME_MODE`, else 0777 less `UMASK` (022 by default).
    pub(crate) fn home_mode(&self) -> u32 {
        if let Some(m) = self.num("HOME_MODE") {
            return (m as u32) & 0o7777;
        }
        let umask = self.num("UMASK").map_or(0o022, |m| (m as u32) & 0o777);
        0o777 & !umask
    }

    /// The shadow entry `useradd` writes for a new user: the hash, today as the last change,
    /// `PASS_MIN_DAYS`, `PASS_MAX_DAYS`, `PASS_WARN_AGE` (empty when login.defs lacks them),
    /// `INACTIVE` and `EXPIRE` of `/etc/default/useradd` (empty by default).
    pub(crate) fn new_shadow_entry(&self, name: &str, hash: &str) -> Vec<String> {
        let num = |k: &str| {
            self.num(k)
                .filter(|n| *n >= 0)
                .map(|n| n.to_string())
                .unwrap_or_default()
        };
        let inactive = self
            .useradd("INACTIVE")
            .filter(|v| !v.starts_with('-'))
            .unwrap_or("")
            .to_owned();
        let expire = self.useradd("EXPIRE").unwrap_or("").to_owned();
        vec![
            name.to_owned(),
            hash.to_owned(),
            today().to_string(),
            num("PASS_MIN_DAYS"),
            num("PASS_MAX_DAYS"),
            num("PASS_WARN_AGE"),
            inactive,
            expire,
            String::new(),
        ]
    }
}

/// Days since the epoch, as shadow-utils counts the last password change: now, or
/// `SOURCE_DATE_EPOCH` when set (reproducible image builds), as shadow-utils does.
pub(crate) fn today() -> u64 {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
    secs / 86_400
}

/// Checks a user or group name as shadow-utils does (`[a-zA-Z0-9_.][a-zA-Z0-9_.-]*$?`, not
/// only digits, not `.` or `..`, at most 32 characters). `what` names the field for errors.
pub(crate) fn check_name(what: &str, name: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{what}: invalid name {name:?}: {why}"));
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 32 {
        return bad("longer than 32 characters");
    }
    if name == "." || name == ".." || name.bytes().all(|b| b.is_ascii_digit()) {
        return bad("a name cannot be only digits, '.' or '..'");
    }
    let body = name.strip_suffix('$').unwrap_or(name);
    let ok_char = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-';
    if body.starts_with('-') || body.is_empty() || !body.bytes().all(ok_char) {
        return bad("use letters, digits, '_', '.', '-' (not first), and an optional final '$'");
    }
    Ok(())
}

/// Checks a field value that goes into a database line: no `:` and no line break.
pub(crate) fn check_field(what: &str, value: &str) -> Result<(), String> {
    if value.contains([':', '\n', '\r']) {
        return Err(format!(
            "{what}: {value:?} contains ':' or a line break, which the account databases cannot hold"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn table(db: Db, text: &str) -> Table {
        Table::parse(db, Some(text.as_bytes().to_vec()), Some((0o644, 0, 0)))
    }

    #[test]
    fn lines_that_are_not_entries_are_kept() {
        let text = "# comment\nroot:x:0:0:root:/root:/bin/sh\n\nbad line\n+@nis\nbob:x:1000:1000::/home/bob:/bin/sh\n";
        let mut t = table(Db::Passwd, text);
        assert_eq!(t.render(), text.as_bytes());
        assert_eq!(t.entries().count(), 2);
        t.put(
            "carol:x:1001:1001::/home/carol:/bin/sh"
                .split(':')
                .map(String::from)
                .collect(),
        );
        let out = String::from_utf8(t.render()).unwrap();
        assert!(
            out.ends_with("bad line\ncarol:x:1001:1001::/home/carol:/bin/sh\n+@nis\nbob:x:1000:1000::/home/bob:/bin/sh\n"),
            "{out}"
        );
        assert!(t.remove("bob"));
        assert!(!t.remove("bob"));
    }

    #[test]
    fn non_utf8_and_missing_final_newline() {
        let mut bytes = b"root:x:0:0:r\xe9:/root:/bin/sh\nbob:x:1:1::/h:/bin/sh".to_vec();
        let t = Table::parse(Db::Passwd, Some(bytes.clone()), None);
        assert_eq!(t.entries().count(), 1);
        bytes.push(b'\n');
        assert_eq!(t.render(), bytes);
    }

    #[test]
    fn ids_are_allocated_as_useradd_does() {
        assert_eq!(free_id(&[0, 1, 65534], 1000, 60000, None), Some(1000));
        assert_eq!(free_id(&[0, 1000, 1005], 1000, 60000, None), Some(1006));
        assert_eq!(
            free_id(&[0, 1000, 1005], 1000, 60000, Some(1003)),
            Some(1003)
        );
        assert_eq!(
            free_id(&[0, 1000, 1005], 1000, 60000, Some(1005)),
            Some(1006)
        );
        assert_eq!(free_id(&[1000, 1002], 1000, 1002, None), Some(1001));
        assert_eq!(free_id(&[1000, 1001], 1000, 1001, None), None);
    }

    #[test]
    fn names_and_fields() {
        for ok in ["tibco", "a.b-c_d", "_x", "machine$", "1abc"] {
            check_name("user", ok).unwrap();
        }
        for bad in ["", "-x", "a:b", "a b", "123", "..", "é", &"x".repeat(33)] {
            assert!(check_name("user", bad).is_err(), "{bad:?}");
        }
        assert!(check_field("gecos", "a:b").unwrap_err().contains("gecos"));
        assert!(check_field("home", "/a\n").is_err());
    }

    #[test]
    fn login_defs_numbers() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("etc/default")).unwrap();
        fs::write(
            dir.path().join("etc/login.defs"),
            "UMASK\t\t027\nUID_MIN 2000\nUSERGROUPS_ENAB yes\n#GID_MIN 5\nPASS_MAX_DAYS 0x10\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("etc/default/useradd"),
            "SHELL=/bin/bash\nHOME=\n",
        )
        .unwrap();
        let h = Host::new(dir.path());
        let d = Defs::load(h.view()).unwrap();
        assert_eq!(d.home_mode(), 0o750);
        assert_eq!(d.range("UID"), (2000, 60000));
        assert_eq!(d.range("GID"), (1000, 60000));
        assert!(d.user_private_groups());
        assert_eq!(d.num("PASS_MAX_DAYS"), Some(16));
        assert_eq!(d.shell(), "/bin/bash");
        assert_eq!(d.home_base(), "/home");
    }

    fn root_with_db() -> (tempfile::TempDir, Host) {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        fs::create_dir_all(&etc).unwrap();
        fs::write(etc.join("passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        fs::write(etc.join("shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
        fs::set_permissions(etc.join("shadow"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::write(etc.join("group"), "root:x:0:\n").unwrap();
        let h = Host::new(dir.path()).with_var_dir(dir.path().join("var"));
        (dir, h)
    }

    #[test]
    fn an_edit_writes_backups_keeps_modes_and_unlocks() {
        let (dir, h) = root_with_db();
        let etc = dir.path().join("etc");
        let mut log = Log::new();
        Accounts::edit(&h, &mut log, |a, _| {
            a.add_group("staff", 1000);
            a.shadow.put(Defs::default().new_shadow_entry("bob", "!"));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            fs::read_to_string(etc.join("group")).unwrap(),
            "root:x:0:\nstaff:!:1000:\n"
        );
        assert_eq!(
            fs::read_to_string(etc.join("group-")).unwrap(),
            "root:x:0:\n"
        );
        assert_eq!(
            fs::read_to_string(etc.join("shadow-")).unwrap(),
            "root:*:19000:0:99999:7:::\n"
        );
        for f in ["shadow", "shadow-"] {
            let mode = fs::metadata(etc.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o640, "{f}");
        }
        // passwd did not change: no backup.
        assert!(!etc.join("passwd-").exists());
        // The lckpwdf file stays (as shadow-utils leaves it), the .lock files are gone.
        assert!(etc.join(".pwd.lock").exists());
        let names: Vec<String> = fs::read_dir(&etc)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".lock") && n != ".pwd.lock" || n.contains("tenet"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }

    #[test]
    fn a_linked_database_is_read_but_never_replaced() {
        let (dir, h) = root_with_db();
        let etc = dir.path().join("etc");
        fs::rename(etc.join("group"), etc.join("group.real")).unwrap();
        std::os::unix::fs::symlink("group.real", etc.join("group")).unwrap();
        let acc = Accounts::load(h.view()).unwrap();
        assert!(acc.group("root").is_some());
        let err = Accounts::edit(&h, &mut Log::new(), |a, _| {
            a.add_group("staff", 1000);
            Ok(())
        })
        .unwrap_err();
        assert!(err.contains("/etc/group is a symbolic link"), "{err}");
        assert!(
            fs::symlink_metadata(etc.join("group"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            fs::read_to_string(etc.join("group.real")).unwrap(),
            "root:x:0:\n"
        );
    }

    #[test]
    fn a_failed_change_writes_nothing() {
        let (dir, h) = root_with_db();
        let before = crate::testing::snapshot(&dir.path().join("etc"));
        let r: Result<(), String> = Accounts::edit(&h, &mut Log::new(), |a, _| {
            a.add_group("staff", 1000);
            Err("refused".into())
        });
        assert_eq!(r.unwrap_err(), "refused");
        let after = crate::testing::snapshot(&dir.path().join("etc"));
        let d: Vec<String> = crate::testing::diff_snapshots(&before, &after)
            .into_iter()
            .filter(|d| !d.contains(".pwd.lock"))
            .collect();
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn a_live_lock_is_respected_and_a_stale_one_replaced() {
        let (dir, h) = root_with_db();
        let lock = dir.path().join("etc/passwd.lock");
        // PID 1 is alive (in any PID namespace).
        fs::write(&lock, "1").unwrap();
        let err = Accounts::edit(&h, &mut Log::new(), |a, _| {
            a.add_group("staff", 1000);
            Ok(())
        })
        .unwrap_err();
        assert!(
            err.contains("/etc/passwd.lock") && err.contains("process 1"),
            "{err}"
        );
        assert!(
            !fs::read_to_string(dir.path().join("etc/group"))
                .unwrap()
                .contains("staff")
        );
        // A process id that does not exist: the lock is stale.
        fs::write(&lock, "2147483646").unwrap();
        Accounts::edit(&h, &mut Log::new(), |a, _| {
            a.add_group("staff", 1000);
            Ok(())
        })
        .unwrap();
        assert!(!lock.exists());
        assert!(
            fs::read_to_string(dir.path().join("etc/group"))
                .unwrap()
                .contains("staff")
        );
    }

    /// A POSIX record lock from another process, as `lckpwdf(3)` takes it (Python's
    /// `fcntl.lockf` is `fcntl(F_SETLK)`).
    fn posix_lock(path: &std::path::Path, hold_secs: u32) -> std::process::Command {
        let mut cmd = tenet_release::testing::tool("python3");
        cmd.arg("-c")
            .arg(format!(
                "import fcntl, sys, time\n\
                 f = open(sys.argv[1], 'w')\n\
                 try:\n    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n\
                 except OSError:\n    sys.exit(3)\n\
                 print('locked', flush=True)\n\
                 time.sleep({hold_secs})\n"
            ))
            .arg(path);
        cmd
    }

    #[test]
    fn the_lckpwdf_lock_conflicts_with_posix_locks() {
        let (dir, h) = root_with_db();
        let file = dir.path().join("etc/.pwd.lock");
        let held = h
            .lock_file(&h.path("/etc/.pwd.lock").unwrap(), Duration::from_secs(1))
            .unwrap();
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // While Tenet holds it, another process's lckpwdf-style lock fails...
        let st = posix_lock(&file, 0).status().unwrap();
        assert_eq!(
            st.code(),
            Some(3),
            "a POSIX lock was granted while Tenet held the file"
        );
        // ... and so does a second Tenet holder (another open file description).
        let other = Host::new(dir.path());
        let err = other
            .lock_file(
                &other.path("/etc/.pwd.lock").unwrap(),
                Duration::from_millis(200),
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("locked by another process"),
            "{err}"
        );
        drop(held);
        // While another process holds a POSIX lock, Tenet waits, then gives up.
        let mut child = posix_lock(&file, 5)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "locked");
        let err = h
            .lock_file(
                &h.path("/etc/.pwd.lock").unwrap(),
                Duration::from_millis(300),
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("locked by another process"),
            "{err}"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        h.lock_file(&h.path("/etc/.pwd.lock").unwrap(), Duration::from_secs(5))
            .unwrap();
    }
}
