//! End-to-end tests: the real `tenet` binary against temporary roots (`--root`), real dpkg,
//! the unmodified OpenSVC fixture scripts, and private mount namespaces where a test needs
//! one. One test binary; one file per area:

// Acceptance 1 and the output contract: list / show of the node export, `--format json`
// (summary matches modules) and text output (a banner per module, the digest line).
mod policy_cli;
// Acceptance 2 and 4: the spdc.node policy on a prepared root: check says what is wrong and
// why, fix converges, a second fix changes nothing; contextual rulesets follow packages.
mod node_policy;
// Acceptance 3: the five fixture scripts run unmodified through the compat objects.
mod compat_scripts;
// Acceptance 5: bad policies and bad script modules give precise messages, right exit codes,
// and never stop the other modules.
mod bad_input;
mod script_modules;
// Acceptance 6: check never writes (read-only bind mount of the root).
mod check_never_writes;
// Acceptance 7: fix killed midway leaves every file old or new, never partial.
mod atomic_fix;
// Platform classes (issue 6): MachineConfig import → fix on a temp root (exact contents and
// modes; errors write nothing), the shipped sno-prerequisites library, dnsmasq answering in a
// network namespace after fix, the bridge class converging in a network namespace.
mod platform;
// Templates (issue 5): `tenet template render` (golden, bad inputs), and the native
// spdc.svc.db.cnf ruleset (file `template` + `foreach`) against its script module.
mod templated_files;
// Issue 5 point 5: the TOML spdc-node bundle checks like the node export with its scripts.
mod node_library;
// Writes staged within a module: later rules see them, the commit leaves nothing temporary.
mod staged_writes;
// Issue 12 point 2: writes never escape --root through symbolic links (both resolvers).
mod root_containment;
// Issue 12 item 1: `%%ENV:X%%` substitution never changes a rule's structure.
mod substitution;
// Issue 19 item 3: the README's quick start and the fleet commands of tenet-collector(1), run
// as written.
mod quickstart;
// Issue 14 (part B): keyval, fileinc, cron, process, timedatectl, self_signed_cert, tar, vuln
// and systemd_unit_state through their compat aliases; crontab -l and openssl confirm.
mod library_objects;
