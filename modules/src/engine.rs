//! The run engine: which modules run, in what order, through which state machine, and what
//! is reported.
//!
//! - `check`: check; when nok, `fixable` too (informational).
//! - `fix`: check → (ok: done) → fixable (nok: not fixable, stop) → fix → check.
//! - `fixable`: fixable only. `auto`: `fix` for autofix modules, `check` for the others.
//!
//! A module is a script when its `NN-name` executable exists in the modules directory, and an
//! auto-module otherwise: each variable of its same-named ruleset is then run by the class its
//! `class` names. Modules run one at a time, scripts by their `NN`, auto-modules first (as
//! OpenSVC orders them). Nothing a module does can stop the run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tenet_rulesets::subst::{self, SubstContext};
use tenet_rulesets::{Policy, PolicyRuleset, VarValue, Variable};
use tenet_templates::Library;

use crate::class::{DynRule, RuleContext};
use crate::classes;
use crate::host::Host;
use crate::script::{self, Script};
use crate::status::{Log, LogLine, Status, Stream};

/// The report types are the run-report vocabulary of `tenet_rulesets::api`, defined once for
/// the engine, the agent's output, the results posted and the collector.
pub use tenet_rulesets::api::{
    ActionReport, ModuleKind, ModuleReport, RuleReport, RunAction, RunReport, Summary,
};

/// How to run.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where script modules (`NN-name`) live; `None` = auto-modules only.
    pub modules_dir: Option<PathBuf>,
    /// Per-module time limit, for each script execution (default 10 minutes).
    pub timeout: Duration,
    /// Run the raw action once, skipping the state machine (OpenSVC `--force`).
    pub force: bool,
    /// Restrict the run to these modules.
    pub only_modules: Option<Vec<String>>,
    /// Extra environment for scripts and substitution (`OSVC_PATH_*`, `TENET_ROOT`, ...).
    pub env: Vec<(String, String)>,
    /// Templates rules may name (`file`'s `template`): the shipped ones by default.
    pub templates: Arc<Library>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            modules_dir: None,
            timeout: Duration::from_secs(600),
            force: false,
            only_modules: None,
            env: Vec::new(),
            templates: Library::shared_builtin(),
        }
    }
}

/// Runs `action` over the modules of `policy` on `host`. `on_module` sees each module's
/// report as soon as it is done (for live output).
pub fn run(
    policy: &Policy,
    host: &Host,
    action: RunAction,
    config: &EngineConfig,
    mut on_module: impl FnMut(&ModuleReport),
) -> RunReport {
    let start = Instant::now();
    let mut reports = Vec::new();
    for planned in plan(policy, config) {
        let report = run_module(policy, host, action, config, &planned);
        on_module(&report);
        reports.push(report);
    }
    RunReport {
        action,
        policy_hash: policy.hash.clone(),
        summary: reports.iter().map(|r| r.status).collect(),
        modules: reports,
        duration_ms: start.elapsed().as_millis() as u64,
    }
}

/// A module as it will run.
#[derive(Debug, Clone)]
pub struct PlannedModule {
    /// Name.
    pub name: String,
    /// Reported moduleset.
    pub moduleset: String,
    /// Autofix flag.
    pub autofix: bool,
    /// Its script, or why finding one failed; `Ok(None)` = auto-module.
    pub script: Result<Option<Script>, String>,
}

/// Orders the policy's modules: auto-modules first, then scripts by `NN`; ties keep the
/// policy's order.
pub fn plan(policy: &Policy, config: &EngineConfig) -> Vec<PlannedModule> {
    let mut planned: Vec<(u64, PlannedModule)> = policy
        .modules
        .iter()
        .filter(|m| {
            config
                .only_modules
                .as_ref()
                .is_none_or(|only| only.iter().any(|o| o == &m.name))
        })
        .map(|m| {
            let script = match &config.modules_dir {
                Some(dir) => script::find(dir, &m.name).map_err(|e| e.to_string()),
                None => Ok(None),
            };
            let order = match &script {
                Ok(Some(s)) => s.order,
                _ => 0,
            };
            (
                order,
                PlannedModule {
                    name: m.name.clone(),
                    moduleset: m.modulesets.first().cloned().unwrap_or_default(),
                    autofix: m.autofix,
                    script,
                },
            )
        })
        .collect();
    planned.sort_by_key(|(order, _)| *order);
    planned.into_iter().map(|(_, m)| m).collect()
}

/// The environment of a module: the agent's extra variables, then the policy's.
pub fn module_env(policy: &Policy, config: &EngineConfig, module: &str) -> Vec<(String, String)> {
    let mut env: BTreeMap<String, String> = config.env.iter().cloned().collect();
    env.extend(policy.module_env(module));
    env.into_iter().collect()
}

fn run_module(
    policy: &Policy,
    host: &Host,
    action: RunAction,
    config: &EngineConfig,
    planned: &PlannedModule,
) -> ModuleReport {
    let start = Instant::now();
    let env = module_env(policy, config, &planned.name);
    let (kind, mut runner): (ModuleKind, Box<dyn Runner>) = match &planned.script {
        Err(e) => (ModuleKind::Script, Box::new(Broken(e.clone()))),
        Ok(Some(s)) => {
            let dir = config.modules_dir.clone().unwrap_or_default();
            match script::verify_safe(s, &dir) {
                Ok(()) => (
                    ModuleKind::Script,
                    Box::new(ScriptRunner {
                        script: s.clone(),
                        env: env.clone(),
                        timeout: config.timeout,
                    }),
                ),
                Err(e) => (ModuleKind::Script, Box::new(Broken(e.to_string()))),
            }
        }
        Ok(None) => (
            ModuleKind::Auto,
            Box::new(AutoRunner::load(
                policy,
                host,
                &planned.name,
                &env,
                &config.templates,
            )),
        ),
    };
    let action = match action {
        RunAction::Auto if planned.autofix => RunAction::Fix,
        RunAction::Auto => RunAction::Check,
        other => other,
    };
    let mut actions = Vec::new();
    let mut step = |runner: &mut Box<dyn Runner>, a: RunAction| -> Status {
        let t = Instant::now();
        let (mut status, mut exit_code, mut lines) = runner.run(a, host);
        if a == RunAction::Fix {
            // Commit the staged writes before anything checks them: the check after fix then
            // reports what is on disk, and a failed commit shows in this fix's log.
            if let Err(e) = host.sync() {
                lines.push(LogLine {
                    stream: Stream::Err,
                    text: format!("committing the written files: {e}"),
                });
                status = Status::Nok;
                exit_code = status.exit_code();
            }
        }
        actions.push(ActionReport {
            action: a,
            exit_code,
            log: render_log(&lines),
            duration_ms: t.elapsed().as_millis() as u64,
        });
        status
    };
    let status = if config.force {
        step(&mut runner, action)
    } else {
        match action {
            RunAction::Check => {
                let s = step(&mut runner, RunAction::Check);
                if s == Status::Nok {
                    step(&mut runner, RunAction::Fixable);
                }
                s
            }
            RunAction::Fixable => step(&mut runner, RunAction::Fixable),
            RunAction::Fix | RunAction::Auto => match step(&mut runner, RunAction::Check) {
                Status::Nok => match step(&mut runner, RunAction::Fixable) {
                    Status::Nok => Status::Nok,
                    _ => {
                        step(&mut runner, RunAction::Fix);
                        step(&mut runner, RunAction::Check)
                    }
                },
                other => other,
            },
        }
    };
    // The module's writes are committed and durable before it is reported (a no-op after the
    // commit that follows its fix).
    if let Err(e) = host.sync() {
        tracing::warn!(module = %planned.name, "committing written files: {e}");
    }
    ModuleReport {
        module: planned.name.clone(),
        moduleset: planned.moduleset.clone(),
        kind: Some(kind),
        status,
        actions,
        rules: runner.rules(),
        duration_ms: start.elapsed().as_millis() as u64,
    }
}

/// Renders log lines as OpenSVC sends them to the collector (`ERR: ` before stderr lines).
pub fn render_log(lines: &[LogLine]) -> String {
    let mut s = String::new();
    for l in lines {
        if l.stream == Stream::Err {
            s.push_str("ERR: ");
        }
        s.push_str(&l.text);
        s.push('\n');
    }
    s
}

trait Runner {
    /// Runs one step (check, fixable or fix): (status, exit code, log).
    fn run(&mut self, action: RunAction, host: &Host) -> (Status, i32, Vec<LogLine>);
    fn rules(&self) -> Option<Vec<RuleReport>> {
        None
    }
}

struct Broken(String);

impl Runner for Broken {
    fn run(&mut self, _: RunAction, _: &Host) -> (Status, i32, Vec<LogLine>) {
        let line = LogLine {
            stream: Stream::Err,
            text: self.0.clone(),
        };
        (Status::Nok, 1, vec![line])
    }
}

struct ScriptRunner {
    script: Script,
    env: Vec<(String, String)>,
    timeout: Duration,
}

impl Runner for ScriptRunner {
    fn run(&mut self, action: RunAction, _: &Host) -> (Status, i32, Vec<LogLine>) {
        let x = script::execute(&self.script.path, action.as_str(), &self.env, self.timeout);
        (Status::from_exit_code(x.exit_code), x.exit_code, x.log)
    }
}

/// One variable of an auto-module, loaded once per run (so a `ref` is fetched once).
struct LoadedVariable {
    variable: String,
    class: String,
    rules: Result<Vec<Box<dyn DynRule>>, String>,
    last: Option<(Status, String)>,
}

struct AutoRunner {
    variables: Vec<LoadedVariable>,
    missing: Option<String>,
}

impl AutoRunner {
    fn load(
        policy: &Policy,
        host: &Host,
        module: &str,
        env: &[(String, String)],
        templates: &Arc<Library>,
    ) -> AutoRunner {
        let Some(ruleset) = policy.auto_module_ruleset(module) else {
            return AutoRunner {
                variables: Vec::new(),
                missing: Some(format!(
                    "no script and no ruleset named {module} applies to this node: nothing to do"
                )),
            };
        };
        let env: BTreeMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let lookup = |name: &str| -> Option<String> {
            env.get(name)
                .map(|v| v.to_string())
                .or_else(|| std::env::var(name).ok())
        };
        let ctx = SubstContext {
            lookup: &lookup,
            hostname: host.hostname(),
        };
        let rule_ctx = RuleContext::new(templates.clone(), policy.module_data(module));
        let variables = ruleset
            .variables
            .iter()
            .filter(|v| v.class != "raw")
            .map(|v| LoadedVariable {
                variable: v.name.clone(),
                class: v.class.clone(),
                rules: load_variable(ruleset, v, &ctx, &rule_ctx),
                last: None,
            })
            .collect();
        AutoRunner {
            variables,
            missing: None,
        }
    }
}

/// Substitutes and parses a variable's value and builds its rules (templated rules draw on
/// `rule_ctx`). The error names the ruleset, the variable and the class.
pub fn load_variable(
    ruleset: &PolicyRuleset,
    var: &Variable,
    ctx: &SubstContext<'_>,
    rule_ctx: &RuleContext,
) -> crate::class::LoadedRules {
    let at = format!(
        "ruleset {}, variable {} (class {})",
        ruleset.name, var.name, var.class
    );
    let class = classes::find(&var.class).ok_or_else(|| {
        let known: Vec<&str> = classes::CLASSES.iter().map(|c| c.name).collect();
        format!(
            "{at}: unknown class {:?}; known classes: {}, raw",
            var.class,
            known.join(", ")
        )
    })?;
    let value = substitute_value(&var.value, ctx).map_err(|e| format!("{at}: {e}"))?;
    (class.load)(&value, rule_ctx).map_err(|e| format!("{at}: {e}"))
}

/// `%%ENV:X%%` substitution of a value ([`tenet_rulesets::subst::substitute_value`]): JSON
/// values (and texts that are JSON) get replacements inside their strings only, so a variable
/// never changes a rule's structure; other texts stay strings.
pub fn substitute_value(value: &VarValue, ctx: &SubstContext<'_>) -> Result<Value, String> {
    subst::substitute_value(value, ctx).map_err(|e| e.to_string())
}

impl Runner for AutoRunner {
    fn run(&mut self, action: RunAction, host: &Host) -> (Status, i32, Vec<LogLine>) {
        let mut log = Log::new();
        if let Some(why) = &self.missing {
            log.info(why.clone());
            return (Status::NotApplicable, 2, log.take());
        }
        if self.variables.is_empty() {
            log.info("no variable of this module's ruleset applies to this node");
        }
        let mut statuses = Vec::new();
        for v in &mut self.variables {
            // Per rule: its lines, and its first error as the summary ("<path>: content
            // differs"; later lines detail it). The variable's message joins the summaries.
            let mut lines = Vec::new();
            let mut summaries = Vec::new();
            let status = match &v.rules {
                Err(e) => {
                    summaries.push(e.clone());
                    lines.push(LogLine {
                        stream: Stream::Err,
                        text: e.clone(),
                    });
                    Status::Nok
                }
                Ok(rules) => Status::merge_all(rules.iter().map(|r| {
                    let mut rlog = Log::new();
                    let st = match action {
                        RunAction::Check => r.check(host.view(), &mut rlog),
                        RunAction::Fixable => r.fixable(host.view(), &mut rlog),
                        RunAction::Fix | RunAction::Auto => r.fix(host, &mut rlog),
                    };
                    let rlines = rlog.take();
                    if let Some(first) = rlines.iter().find(|l| l.stream == Stream::Err) {
                        summaries.push(first.text.clone());
                    }
                    lines.extend(rlines);
                    st
                })),
            };
            let message = if summaries.is_empty() {
                lines.last().map(|l| l.text.clone()).unwrap_or_default()
            } else {
                summaries.join("; ")
            };
            if action != RunAction::Fixable {
                v.last = Some((status, message));
            }
            for l in lines {
                match l.stream {
                    Stream::Out => log.info(format!("{}: {}", v.variable, l.text)),
                    Stream::Err => log.err(format!("{}: {}", v.variable, l.text)),
                }
            }
            statuses.push(status);
        }
        let status = Status::merge_all(statuses);
        (status, status.exit_code(), log.take())
    }

    fn rules(&self) -> Option<Vec<RuleReport>> {
        Some(
            self.variables
                .iter()
                .map(|v| {
                    let (status, message) = v
                        .last
                        .clone()
                        .unwrap_or((Status::NotApplicable, String::new()));
                    RuleReport {
                        variable: v.variable.clone(),
                        class: v.class.clone(),
                        status,
                        message,
                    }
                })
                .collect(),
        )
    }
}
