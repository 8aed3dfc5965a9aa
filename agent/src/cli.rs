//! Command-line arguments (clap derive). Each variant documents its command for `--help`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Tenet node agent: check and fix compliance of this node with its policy.
#[derive(Debug, Parser)]
#[command(name = "tenet", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Node configuration file: collector URL, node id, secret file, var dir, listener port,
    /// schedules (default `<root>/etc/tenet/node.toml`; a missing file means masterless).
    #[arg(long, global = true, env = "TENET_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compliance runs and policy inspection.
    #[command(subcommand)]
    Compliance(Compliance),
    /// Run one object class over the environment variables starting with PREFIX (the OpenSVC
    /// `files.py PREFIX check` convention used by module scripts).
    Object(ObjectArgs),
    /// Print the node facts filtersets are evaluated against.
    Facts(FactsArgs),
    /// Register this node with a collector: writes `collector` and `node_id` into the node
    /// configuration and the node secret into its `secret_file` (mode 0600).
    Register(RegisterArgs),
    /// Push this node's facts (asset, installed packages, listener port, hosted services) to
    /// the collector; also delivers results queued while it was unreachable.
    Pushasset(PushassetArgs),
    /// Services: fetch a service's configuration rendered by the collector.
    #[command(subcommand)]
    Svc(SvcCmd),
    /// Convert configuration written for other tools into a Tenet policy folder.
    #[command(subcommand)]
    Import(Import),
    /// Render templates and forms (service configurations, templated files).
    #[command(subcommand)]
    Template(TemplateCmd),
    /// Explain task schedules (the OpenSVC grammar).
    #[command(subcommand)]
    Schedule(ScheduleCmd),
    /// Run scheduled tasks and collector-queued actions, one at a time, until SIGTERM.
    Daemon(DaemonArgs),
    /// List the daemon's tasks (queued, running, latest finished) and next scheduled runs,
    /// or submit one.
    Tasks(TasksArgs),
    /// Ask the running daemon to dequeue collector actions now. With --stdin, first read a
    /// notification from standard input and accept only `dequeue_actions` (for a
    /// socket-activated listener, see packaging/).
    DequeueActions(DequeueArgs),
    /// Internal: one collector call for the daemon (JSON request on stdin, answer on stdout).
    #[command(hide = true)]
    DaemonCall,
    /// Releases in the local image repository: add, remove, status (lir-svc's AddRelease,
    /// RemoveRelease, GetStatus). Add and remove queue a task in the daemon, which runs them
    /// one at a time; `--foreground` runs here and now instead.
    #[command(subcommand)]
    Release(ReleaseCmd),
}

/// `tenet release ...`
#[derive(Debug, Subcommand)]
pub enum ReleaseCmd {
    /// Make release VERSION present: download URL, verify its digest and signature, unpack,
    /// sync its files to the file stores, push its images to the registries, replicate.
    /// Registries, file stores and the public key come from `[release]` in the node
    /// configuration. A release already present whose check is clean is left alone (no
    /// download, no upload; `--force` runs every step). On a terminal, each step shows a
    /// live progress bar; piped or logged, one line per step.
    #[command(disable_version_flag = true)]
    Add(ReleaseAddArgs),
    /// Make release VERSION absent: untag its images and remove its files everywhere, then run
    /// the registries' garbage collection.
    #[command(disable_version_flag = true)]
    Remove(ReleaseRemoveArgs),
    /// Show the state, current step, percent and last error of one release or of all.
    #[command(disable_version_flag = true)]
    Status(ReleaseStatusArgs),
    /// Internal: the daemon's task for `release add|remove` (runs in place).
    #[command(hide = true, subcommand)]
    Run(ReleaseRunCmd),
}

/// Where release commands keep state.
#[derive(Debug, Clone, Args)]
pub struct ReleasePlace {
    /// Root prefix: files the configuration names are taken under it.
    #[arg(long, env = "TENET_ROOT", default_value = "/", value_name = "DIR")]
    pub root: PathBuf,
    /// The agent's state directory (default: the configuration's var_dir, else
    /// `<root>/var/lib/tenet`).
    #[arg(long, env = "TENET_VAR_DIR", value_name = "DIR")]
    pub var_dir: Option<PathBuf>,
}

/// `tenet release add`
#[derive(Debug, Clone, Args)]
pub struct ReleaseAddArgs {
    /// The release squashfs: an http:// or https:// URL.
    pub url: String,
    /// The release version.
    #[arg(long)]
    pub version: String,
    /// The squashfs sha256 (else the server's Digest header must give it).
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// Run every step even when the release is already present and its check is clean
    /// (without it, such an add does nothing and says so).
    #[arg(long)]
    pub force: bool,
    /// Run now in this process instead of queueing a daemon task.
    #[arg(long)]
    pub foreground: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub place: ReleasePlace,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// `tenet release remove`
#[derive(Debug, Clone, Args)]
pub struct ReleaseRemoveArgs {
    /// The release version.
    pub version: String,
    /// Run now in this process instead of queueing a daemon task.
    #[arg(long)]
    pub foreground: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub place: ReleasePlace,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// `tenet release status`
#[derive(Debug, Clone, Args)]
pub struct ReleaseStatusArgs {
    /// One release (default: all this node knows).
    pub version: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub place: ReleasePlace,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// `tenet release run`
#[derive(Debug, Subcommand)]
pub enum ReleaseRunCmd {
    /// Add in place.
    #[command(disable_version_flag = true)]
    Add {
        /// URL.
        url: String,
        /// Version.
        #[arg(long)]
        version: String,
        /// sha256.
        #[arg(long)]
        sha256: Option<String>,
        /// Run every step even when present.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        #[allow(missing_docs)]
        place: ReleasePlace,
    },
    /// Remove in place.
    #[command(disable_version_flag = true)]
    Remove {
        /// Version.
        version: String,
        #[command(flatten)]
        #[allow(missing_docs)]
        place: ReleasePlace,
    },
}

/// `tenet schedule ...`
#[derive(Debug, Subcommand)]
pub enum ScheduleCmd {
    /// Say whether a task with schedule EXPR may run at NOW given its LAST run, why not, and
    /// when it next may. An invalid expression exits 2, naming the bad token.
    Explain(ExplainArgs),
}

/// `tenet schedule explain`
#[derive(Debug, Clone, Args)]
pub struct ExplainArgs {
    /// The schedule: `@1440`, `~02:00-06:00`, `00:00-06:00@60 mon-fri`, a JSON list, ...
    #[arg(allow_hyphen_values = true)]
    pub expr: String,
    /// The time to evaluate at, `YYYY-MM-DD HH:MM[:SS]` (local; default: now).
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,
    /// The task's last run, `YYYY-MM-DD HH:MM[:SS]` (default: never ran).
    #[arg(long, value_name = "TIME")]
    pub last: Option<String>,
    /// The node id whose `~` splay to use (default: this node's id, else its host name).
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,
    /// Output format: JSON is `{"allowed", "reason", "next"}`.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// `tenet daemon`
#[derive(Debug, Clone, Args)]
pub struct DaemonArgs {
    /// Root prefix given to the tasks.
    #[arg(long, env = "TENET_ROOT", default_value = "/", value_name = "DIR")]
    pub root: PathBuf,
    /// Where the agent keeps its state (default: the configuration's var_dir, else
    /// `<root>/var/lib/tenet`).
    #[arg(long, env = "TENET_VAR_DIR", value_name = "DIR")]
    pub var_dir: Option<PathBuf>,
}

/// `tenet tasks`
#[derive(Debug, Clone, Args)]
pub struct TasksArgs {
    /// Queue this allow-listed command in the running daemon (`compliance check
    /// --moduleset X`, `pushasset`, ...), origin `cli`.
    #[arg(long, value_name = "COMMAND")]
    pub submit: Option<String>,
    /// Root prefix (locates the default var dir).
    #[arg(long, env = "TENET_ROOT", default_value = "/", value_name = "DIR")]
    pub root: PathBuf,
    /// The agent's state directory.
    #[arg(long, env = "TENET_VAR_DIR", value_name = "DIR")]
    pub var_dir: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// `tenet dequeue-actions`
#[derive(Debug, Clone, Args)]
pub struct DequeueArgs {
    /// Read the notification from standard input first (systemd `Accept=yes` socket).
    #[arg(long)]
    pub stdin: bool,
    /// Root prefix (locates the default var dir).
    #[arg(long, env = "TENET_ROOT", default_value = "/", value_name = "DIR")]
    pub root: PathBuf,
    /// The agent's state directory.
    #[arg(long, env = "TENET_VAR_DIR", value_name = "DIR")]
    pub var_dir: Option<PathBuf>,
}

/// `tenet register`
#[derive(Debug, Clone, Args)]
pub struct RegisterArgs {
    /// Collector base URL, e.g. `https://collector.example:8443`. Plain http:// is refused (the
    /// node's secret would cross the network in clear) unless --insecure-http is given.
    #[arg(long, value_name = "URL")]
    pub collector: String,
    /// Accept a plain http:// collector URL: the admin token and then the node secret are
    /// sent unencrypted on every call. For a collector on the same host or a trusted network
    /// only; recorded in the node configuration (`insecure_http = true`), which later calls
    /// require too.
    #[arg(long)]
    pub insecure_http: bool,
    /// An admin token of the collector (`tenet-collector token create --admin`).
    #[arg(
        long,
        env = "TENET_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: String,
    /// The node name to register (default: the short form of TENET_NODENAME if set, else of
    /// this host's name, as in the node facts).
    #[arg(long, value_name = "NODE")]
    pub name: Option<String>,
    /// The team (publication group) the collector assigns the node to: it may attach the
    /// rulesets and modulesets published to it. Needs the admin token, like registration;
    /// what the node later reports in its facts grants nothing.
    #[arg(long, value_name = "TEAM")]
    pub team: Option<String>,
    /// A service the collector assigns the node to host (may be repeated): the node may
    /// fetch its policy and configuration and post its results.
    #[arg(long = "service", value_name = "SVC")]
    pub services: Vec<String>,
    /// PEM certificates to trust for the collector (recorded in the configuration): CA
    /// certificates, or the collector's own self-signed certificate (`openssl req -x509`),
    /// which is then pinned (accepted byte for byte, if valid now and naming the host).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Keep trying for up to SECS seconds (once a second) while the collector is unreachable
    /// or answers with a server error, as when it is still starting. A refusal (bad token,
    /// bad name, ...) is final at once.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub wait: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// `tenet svc ...`
#[derive(Debug, Subcommand)]
pub enum SvcCmd {
    /// Write the configuration the collector holds for SVC (rendered from a form) to
    /// `<root>/etc/tenet/services/SVC.conf` (or --output), atomically; an identical file is
    /// left untouched. The node must host SVC (`services` in its configuration).
    Pull(SvcPullArgs),
}

/// `tenet svc pull`
#[derive(Debug, Clone, Args)]
pub struct SvcPullArgs {
    /// The service.
    pub service: String,
    /// Root prefix of the managed system.
    #[arg(long, env = "TENET_ROOT", default_value = "/", value_name = "DIR")]
    pub root: PathBuf,
    /// Write here instead of `<root>/etc/tenet/services/SVC.conf`.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// `tenet pushasset`
#[derive(Debug, Clone, Args)]
pub struct PushassetArgs {
    /// Root prefix of the managed system (facts are read under it).
    #[arg(long, env = "TENET_ROOT", default_value = "/", value_name = "DIR")]
    pub root: PathBuf,
    /// Where the agent keeps its state (default: the configuration's var_dir, else
    /// `<root>/var/lib/tenet`).
    #[arg(long, env = "TENET_VAR_DIR", value_name = "DIR")]
    pub var_dir: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// `tenet import ...`
#[derive(Debug, Subcommand)]
pub enum Import {
    /// Turn OpenShift MachineConfigs (or bare Ignition v3 configs) into a policy folder:
    /// storage.files / directories / links, systemd.units and storage.filesystems (as mount
    /// checks) become rules; what has no rule is reported as a warning. Nothing is written on
    /// error.
    #[command(name = "machineconfig", visible_alias = "machine-config")]
    Machineconfig(ImportMachineConfigArgs),
}

/// `tenet import machineconfig`
#[derive(Debug, Clone, Args)]
pub struct ImportMachineConfigArgs {
    /// MachineConfig YAML files (or Ignition JSON); each becomes a ruleset and a moduleset.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The policy folder to write (usable as --policy DIR).
    #[arg(short = 'o', long, value_name = "DIR")]
    pub output: PathBuf,
    /// Replace DIR when it exists and is not empty.
    #[arg(long)]
    pub force: bool,
}

/// `tenet template ...`
#[derive(Debug, Subcommand)]
pub enum TemplateCmd {
    /// Render a form (its inputs checked first) or a plain template, and print the result.
    /// Any error (unknown template, bad input, template error) exits 2 and prints nothing.
    Render(RenderArgs),
    /// List the templates: forms marked, files that do not load reported.
    List(TemplateDirArgs),
    /// Show a form's inputs and checks.
    Show {
        /// Template name.
        name: String,
        #[command(flatten)]
        /// Template directories.
        dirs: TemplateDirArgs,
    },
}

/// `tenet template render`
#[derive(Debug, Clone, Args)]
pub struct RenderArgs {
    /// Template name (`tenet template list` lists them).
    pub name: String,
    /// A JSON file holding the inputs (an object); `-` reads standard input.
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// One input, typed by the form (`--set npods=32`); repeatable; overrides --input.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Use the defaults of mandatory inputs that are not given (what a form UI pre-fills).
    #[arg(long)]
    pub defaults: bool,
    #[command(flatten)]
    /// Template directories.
    pub dirs: TemplateDirArgs,
}

/// Where templates come from besides the shipped ones.
#[derive(Debug, Clone, Args)]
pub struct TemplateDirArgs {
    /// An extra template directory; its templates replace shipped ones of the same name.
    #[arg(long, env = "TENET_TEMPLATE_DIR", value_name = "DIR")]
    pub template_dir: Option<PathBuf>,
}

/// `tenet compliance ...`
#[derive(Debug, Subcommand)]
pub enum Compliance {
    /// Report whether the node complies; change nothing (exit 1 when any module is nok).
    Check(RunArgs),
    /// Bring the node to compliance: check, fixable, fix, check again, module by module.
    Fix(RunArgs),
    /// Report whether non-compliant modules can be fixed.
    Fixable(RunArgs),
    /// Fix modules marked autofix, check the others.
    Auto(RunArgs),
    /// Print each module's environment (the OSVC_COMP_* variables scripts receive).
    Env(RunArgs),
    /// List the modulesets, rulesets or modules of a policy.
    List(ListArgs),
    /// Show a moduleset tree, the rulesets that apply to this node, or (from the collector)
    /// this node's compliance status.
    Show(ShowArgs),
    /// Attach a moduleset or ruleset to this node, on the collector.
    Attach(AttachArgs),
    /// Detach a moduleset or ruleset from this node, on the collector.
    Detach(AttachArgs),
    /// Create DIR/com.opensvc/ holding the OpenSVC object aliases (files.py, sysctl.py, ...)
    /// so that existing module scripts in DIR run unmodified.
    InstallCompat {
        /// The modules directory.
        dir: PathBuf,
    },
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// Readable text (colour on a terminal).
    #[default]
    Text,
    /// One JSON document.
    Json,
}

/// Where the policy comes from and which part of it to use.
#[derive(Debug, Clone, Args)]
pub struct PolicyArgs {
    /// Policy bundle: a folder of Tenet TOML files, a TOML file, or an OpenSVC export JSON
    /// (masterless). Without it, the policy comes from the collector of the node
    /// configuration, and results are posted back.
    #[arg(long, env = "TENET_POLICY", value_name = "PATH")]
    pub policy: Option<PathBuf>,
    /// Modulesets to run, comma-separated (default: every root moduleset of the policy).
    #[arg(long, value_delimiter = ',')]
    pub moduleset: Option<Vec<String>>,
    /// Rulesets attached to this node, comma-separated (visible to every module).
    #[arg(long, value_delimiter = ',')]
    pub ruleset: Vec<String>,
    /// Run for this service (exports OSVC_COMP_SERVICES_SVCNAME and friends).
    #[arg(long, value_name = "SVC")]
    pub service: Option<String>,
    /// Root prefix of the managed system: every path, /proc/sys, /sys and package database
    /// is looked up under it.
    #[arg(long, env = "TENET_ROOT", default_value = "/", value_name = "DIR")]
    pub root: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Options of check / fix / fixable / auto / env.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    /// Policy selection.
    pub policy: PolicyArgs,
    /// Run only these modules, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub module: Option<Vec<String>>,
    /// Directory of script modules (`NN-name` executables).
    #[arg(long, env = "TENET_MODULES_DIR", value_name = "DIR")]
    pub modules_dir: Option<PathBuf>,
    /// Where backups and agent state go (default `<root>/var/lib/tenet`).
    #[arg(long, env = "TENET_VAR_DIR", value_name = "DIR")]
    pub var_dir: Option<PathBuf>,
    /// Folder of local package files (.deb, .rpm) the package class installs from.
    #[arg(long, env = "TENET_PACKAGE_DIR", value_name = "DIR")]
    pub package_dir: Option<PathBuf>,
    /// Per-module time limit in seconds; the module's whole process group is killed after it.
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    pub timeout: u64,
    /// Run the raw action once per module, skipping the check/fixable/fix/check sequence.
    #[arg(long)]
    pub force: bool,
    /// Accept a selection with no module (exit 0 with a warning). Without it, a run whose
    /// selection holds no module exits 2, as OpenSVC does: nothing attached usually means a
    /// mistake, not compliance.
    #[arg(long)]
    pub allow_empty: bool,
    #[command(flatten)]
    /// Templates `file` rules may name.
    pub templates: TemplateDirArgs,
}

/// `tenet compliance list`
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// What to list.
    pub what: ListWhat,
    #[command(flatten)]
    /// Policy selection.
    pub policy: PolicyArgs,
}

/// What `list` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListWhat {
    /// Every moduleset of the policy.
    Modulesets,
    /// Every ruleset of the policy.
    Rulesets,
    /// The modules the selected modulesets run.
    Modules,
}

/// `tenet compliance show`
#[derive(Debug, Clone, Args)]
pub struct ShowArgs {
    /// What to show.
    pub what: ShowWhat,
    #[command(flatten)]
    /// Policy selection.
    pub policy: PolicyArgs,
}

/// What `show` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShowWhat {
    /// The moduleset tree: modulesets, their modules (autofix marked), their children.
    Moduleset,
    /// The rulesets that apply to this node, why, and their variables as environment.
    Ruleset,
    /// This node's latest status per module, as the collector recorded it.
    Status,
}

/// `tenet compliance attach|detach`
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false, id = "object")]
pub struct AttachArgs {
    /// The moduleset.
    #[arg(long, group = "object")]
    pub moduleset: Option<String>,
    /// The ruleset.
    #[arg(long, group = "object")]
    pub ruleset: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// `tenet object`
#[derive(Debug, Clone, Args)]
pub struct ObjectArgs {
    /// Class name or alias: file, sysctl, package, user, group, keyval, cron, ... (every class
    /// and its OpenSVC aliases, such as `users` or `sysctl.py`, are listed in docs/classes.md).
    pub class: String,
    /// Environment variable prefix, e.g. OSVC_COMP_SPDC_KERNEL_FILE.
    pub prefix: String,
    /// check, fix or fixable.
    pub action: String,
}

/// `tenet facts`
#[derive(Debug, Clone, Args)]
pub struct FactsArgs {
    /// Root prefix of the managed system.
    #[arg(long, env = "TENET_ROOT", default_value = "/", value_name = "DIR")]
    pub root: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
