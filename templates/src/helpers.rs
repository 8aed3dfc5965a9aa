//! The helpers templates use for configuration work, and the strict `if` / `unless`.
//!
//! Every helper here is strict in the way the registry is: an argument that names a variable
//! the data does not hold is an error naming that variable (handlebars passes such arguments
//! to helpers as "missing" values instead of failing, and its own `if` just takes the `else`
//! branch). Only `defined` and `default` accept a missing argument: they exist to test for one.
//!
//! Integer arguments are JSON integers or strings holding a decimal integer (`"07"` is 7), so
//! values that went through text (environment variables, rendered `vars`) still compute.
//! Arithmetic is on 64-bit signed integers: overflow and division by zero are errors; `div`
//! and `mod` truncate toward zero, as C, bash and JavaScript's `%` do.
//!
//! The list, with examples, is in `templates/README.md`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use base64::Engine as _;
use handlebars::{
    BlockContext, BlockParams, Context, Handlebars, Helper, HelperDef, HelperResult, JsonRender,
    JsonTruthy, Output, RenderContext, RenderError, RenderErrorReason, Renderable, ScopedJson,
};
use serde_json::Value;

/// The longest list `range` and `times` produce: a typo (`range 1 1000000000`) must fail
/// clearly, not exhaust memory.
pub const MAX_RANGE: i64 = 1_000_000;

/// Why a helper call failed.
enum Fail {
    /// An argument names a variable the data lacks (its path as written, if any).
    Missing(Option<String>),
    /// Anything else, for a person.
    Msg(String),
    /// The template refused its data (`fail`): the message is the template's, as is.
    Refused(String),
}

impl From<String> for Fail {
    fn from(s: String) -> Fail {
        Fail::Msg(s)
    }
}

impl From<&str> for Fail {
    fn from(s: &str) -> Fail {
        Fail::Msg(s.to_string())
    }
}

type HResult<T> = Result<T, Fail>;

/// One argument as the helper received it.
struct Arg {
    /// The path written in the template, for messages (`None` for literals, subexpressions).
    path: Option<String>,
    /// The value; `None` when the path names nothing in the data.
    value: Option<Value>,
}

/// A helper call's arguments, with typed accessors that fail with a message naming the
/// argument.
struct Args {
    params: Vec<Arg>,
    hash: BTreeMap<String, Arg>,
}

impl Args {
    fn collect(h: &Helper<'_>) -> Args {
        let arg = |p: &handlebars::PathAndJson<'_>| Arg {
            path: p.relative_path().cloned(),
            value: (!p.is_value_missing()).then(|| p.value().clone()),
        };
        Args {
            params: h.params().iter().map(arg).collect(),
            hash: h
                .hash()
                .iter()
                .map(|(k, v)| (k.to_string(), arg(v)))
                .collect(),
        }
    }

    fn len(&self) -> usize {
        self.params.len()
    }

    /// Argument `i`, which must be present in the data.
    fn value(&self, i: usize) -> HResult<&Value> {
        let arg = self
            .params
            .get(i)
            .ok_or_else(|| Fail::Msg(format!("argument {} is required", i + 1)))?;
        arg.value
            .as_ref()
            .ok_or_else(|| Fail::Missing(arg.path.clone()))
    }

    /// Argument `i` when present in the data, `None` when it names nothing.
    fn optional(&self, i: usize) -> Option<&Value> {
        self.params.get(i).and_then(|a| a.value.as_ref())
    }

    fn int(&self, i: usize) -> HResult<i64> {
        to_int(self.value(i)?).map_err(|m| Fail::Msg(format!("argument {}: {m}", i + 1)))
    }

    /// A scalar as text (strings as they are, numbers and booleans as written).
    fn text(&self, i: usize) -> HResult<String> {
        scalar_text(self.value(i)?).map_err(|m| Fail::Msg(format!("argument {}: {m}", i + 1)))
    }

    fn list(&self, i: usize) -> HResult<&Vec<Value>> {
        match self.value(i)? {
            Value::Array(a) => Ok(a),
            other => Err(Fail::Msg(format!(
                "argument {}: expected a list, got {}",
                i + 1,
                describe(other)
            ))),
        }
    }

    fn hash_value(&self, key: &str) -> HResult<Option<&Value>> {
        match self.hash.get(key) {
            None => Ok(None),
            Some(Arg { value: Some(v), .. }) => Ok(Some(v)),
            Some(Arg { path, .. }) => Err(Fail::Missing(path.clone())),
        }
    }
}

/// A JSON integer, or a string holding a decimal integer (surrounding spaces refused).
pub fn to_int(v: &Value) -> Result<i64, String> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| format!("expected an integer, got {n}")),
        Value::String(s) => {
            let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("expected an integer, got the string {s:?}"));
            }
            s.parse::<i64>()
                .map_err(|_| format!("{s:?} does not fit in a 64-bit integer"))
        }
        other => Err(format!("expected an integer, got {}", describe(other))),
    }
}

fn scalar_text(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!("expected text, got {}", describe(other))),
    }
}

/// A short description of a JSON value for messages.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(a) => format!("a list of {} items", a.len()),
        Value::Object(_) => "an object".into(),
    }
}

fn overflow() -> Fail {
    Fail::Msg("integer overflow".into())
}

/// A helper computing one value from its arguments; usable as `{{h a b}}` (the value is
/// rendered) and as a subexpression `(h a b)` (the value keeps its JSON type).
struct ValueHelper {
    name: &'static str,
    /// Allowed number of positional arguments (min, max).
    arity: (usize, usize),
    f: fn(&Args) -> HResult<Value>,
}

impl HelperDef for ValueHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let args = Args::collect(h);
        let (min, max) = self.arity;
        if args.len() < min || args.len() > max {
            let want = if min == max {
                format!("{min}")
            } else if max == usize::MAX {
                format!("at least {min}")
            } else {
                format!("{min} to {max}")
            };
            return Err(RenderErrorReason::Other(format!(
                "helper {}: takes {want} argument(s), got {}",
                self.name,
                args.len()
            ))
            .into());
        }
        (self.f)(&args)
            .map(ScopedJson::Derived)
            .map_err(|f| fail_to_render(self.name, f))
    }
}

fn fail_to_render(helper: &str, f: Fail) -> RenderError {
    match f {
        Fail::Missing(path) => RenderErrorReason::MissingVariable(path).into(),
        Fail::Msg(m) => RenderErrorReason::Other(format!("helper {helper}: {m}")).into(),
        Fail::Refused(m) => RenderErrorReason::Other(m).into(),
    }
}

/// `{{#if x}}` / `{{#unless x}}` that fail when `x` names nothing, instead of silently taking
/// the `else` branch (handlebars' strict mode does not cover block helper arguments). Use
/// `{{#if (defined x)}}` to test whether a variable exists. Supports `includeZero=true`.
struct StrictIf {
    name: &'static str,
    positive: bool,
}

impl HelperDef for StrictIf {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        rc: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let param = h
            .param(0)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex(self.name, 0))?;
        if param.is_value_missing() {
            return Err(RenderErrorReason::MissingVariable(param.relative_path().cloned()).into());
        }
        let include_zero = h
            .hash_get("includeZero")
            .and_then(|v| v.value().as_bool())
            .unwrap_or(false);
        let value = param.value().is_truthy(include_zero) == self.positive;
        match if value { h.template() } else { h.inverse() } {
            Some(t) => t.render(r, ctx, rc, out),
            None => Ok(()),
        }
    }
}

/// `{{#times n}}...{{/times}}`: renders the block `n` times with `this` (and `@index`) from 0
/// to n-1, `@number` from 1 to n, `@first` and `@last`; `as |i|` names the counter. `n` ≤ 0
/// renders the `{{else}}` block, if any.
struct Times;

impl HelperDef for Times {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        rc: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let args = Args::collect(h);
        let n = args.int(0).map_err(|f| fail_to_render("times", f))?;
        if n > MAX_RANGE {
            return Err(fail_to_render(
                "times",
                Fail::Msg(format!("{n} is more than the limit of {MAX_RANGE}")),
            ));
        }
        if n <= 0 {
            return match h.inverse() {
                Some(t) => t.render(r, ctx, rc, out),
                None => Ok(()),
            };
        }
        let Some(t) = h.template() else {
            return Ok(());
        };
        rc.push_block(BlockContext::new());
        for i in 0..n {
            if let Some(block) = rc.block_mut() {
                block.set_base_value(Value::from(i));
                block.set_local_var("index", Value::from(i));
                block.set_local_var("number", Value::from(i + 1));
                block.set_local_var("first", Value::from(i == 0));
                block.set_local_var("last", Value::from(i == n - 1));
                if let Some(name) = h.block_param() {
                    let mut params = BlockParams::new();
                    params.add_value(name, Value::from(i))?;
                    block.set_block_params(params);
                }
            }
            t.render(r, ctx, rc, out)?;
        }
        rc.pop_block();
        Ok(())
    }
}

macro_rules! helpers {
    ($($name:literal ($min:expr, $max:expr) => $f:expr),* $(,)?) => {
        /// Every value helper: (name, (min, max arguments), function).
        const VALUE_HELPERS: &[(&str, (usize, usize), fn(&Args) -> HResult<Value>)] =
            &[$(($name, ($min, $max), $f)),*];
    };
}

const MANY: usize = usize::MAX;

helpers! {
    // Presence (the only helpers that accept a missing argument).
    "defined" (1, 1) => |a| Ok(Value::Bool(a.optional(0).is_some_and(|v| !v.is_null()))),
    "default" (2, 2) => |a| match a.optional(0) {
        Some(v) if !v.is_null() => Ok(v.clone()),
        _ => a.value(1).cloned(),
    },
    // Refusing: a template's own error message, for inputs it cannot handle.
    "fail" (1, MANY) => |a| {
        let mut s = String::new();
        for i in 0..a.len() {
            s.push_str(&a.text(i)?);
        }
        Err(Fail::Refused(s))
    },
    // Comparison and logic.
    "eq" (2, 2) => |a| Ok(Value::Bool(a.value(0)? == a.value(1)?)),
    "ne" (2, 2) => |a| Ok(Value::Bool(a.value(0)? != a.value(1)?)),
    "lt" (2, 2) => |a| compare(a).map(|o| Value::Bool(o.is_lt())),
    "le" (2, 2) => |a| compare(a).map(|o| Value::Bool(o.is_le())),
    "lte" (2, 2) => |a| compare(a).map(|o| Value::Bool(o.is_le())),
    "gt" (2, 2) => |a| compare(a).map(|o| Value::Bool(o.is_gt())),
    "ge" (2, 2) => |a| compare(a).map(|o| Value::Bool(o.is_ge())),
    "gte" (2, 2) => |a| compare(a).map(|o| Value::Bool(o.is_ge())),
    // Every argument must exist, even past the one that decides: a typo is an error
    // whatever the other values are.
    "and" (1, MANY) => |a| Ok(Value::Bool(truths(a)?.iter().all(|t| *t))),
    "or" (1, MANY) => |a| Ok(Value::Bool(truths(a)?.iter().any(|t| *t))),
    "not" (1, 1) => |a| Ok(Value::Bool(!a.value(0)?.is_truthy(false))),
    // Integer arithmetic.
    "add" (2, MANY) => |a| {
        let mut sum = a.int(0)?;
        for i in 1..a.len() {
            sum = sum.checked_add(a.int(i)?).ok_or_else(overflow)?;
        }
        Ok(Value::from(sum))
    },
    "sub" (2, 2) => |a| a.int(0)?.checked_sub(a.int(1)?).map(Value::from).ok_or_else(overflow),
    "mul" (2, MANY) => |a| {
        let mut product = a.int(0)?;
        for i in 1..a.len() {
            product = product.checked_mul(a.int(i)?).ok_or_else(overflow)?;
        }
        Ok(Value::from(product))
    },
    "div" (2, 2) => |a| {
        let (x, y) = (a.int(0)?, a.int(1)?);
        if y == 0 {
            return Err(format!("division of {x} by zero").into());
        }
        x.checked_div(y).map(Value::from).ok_or_else(overflow)
    },
    "mod" (2, 2) => |a| {
        let (x, y) = (a.int(0)?, a.int(1)?);
        if y == 0 {
            return Err(format!("{x} modulo zero").into());
        }
        x.checked_rem(y).map(Value::from).ok_or_else(overflow)
    },
    "to_int" (1, 1) => |a| a.int(0).map(Value::from),
    "pad" (2, 2) => |a| {
        let (n, width) = (a.int(0)?, a.int(1)?);
        if !(0..=1000).contains(&width) {
            return Err(format!("width {width} is not between 0 and 1000").into());
        }
        Ok(Value::String(format!("{n:0w$}", w = width as usize)))
    },
    // Loops over counts.
    "range" (1, 3) => range,
    // Strings.
    "split" (2, 2) => |a| {
        let (s, sep) = (a.text(0)?, a.text(1)?);
        if sep.is_empty() {
            return Err("the separator is empty (use `words` to split on whitespace)".into());
        }
        Ok(Value::Array(s.split(sep.as_str()).map(|p| Value::String(p.into())).collect()))
    },
    "words" (1, 1) => |a| Ok(Value::Array(
        a.text(0)?.split_whitespace().map(|p| Value::String(p.into())).collect(),
    )),
    "join" (2, 2) => |a| {
        let sep = a.text(1)?;
        let parts: Result<Vec<String>, String> = a.list(0)?.iter().map(scalar_text).collect();
        Ok(Value::String(parts.map_err(|m| format!("argument 1: {m}"))?.join(&sep)))
    },
    "concat" (1, MANY) => |a| {
        let mut s = String::new();
        for i in 0..a.len() {
            s.push_str(&a.text(i)?);
        }
        Ok(Value::String(s))
    },
    "upper" (1, 1) => |a| Ok(Value::String(a.text(0)?.to_uppercase())),
    "lower" (1, 1) => |a| Ok(Value::String(a.text(0)?.to_lowercase())),
    "trim" (1, 1) => |a| Ok(Value::String(a.text(0)?.trim().to_string())),
    "trim_prefix" (2, 2) => |a| {
        let (s, p) = (a.text(0)?, a.text(1)?);
        Ok(Value::String(s.strip_prefix(p.as_str()).unwrap_or(&s).to_string()))
    },
    "trim_suffix" (2, 2) => |a| {
        let (s, p) = (a.text(0)?, a.text(1)?);
        Ok(Value::String(s.strip_suffix(p.as_str()).unwrap_or(&s).to_string()))
    },
    "replace" (3, 3) => |a| {
        let (s, from, to) = (a.text(0)?, a.text(1)?, a.text(2)?);
        if from.is_empty() {
            return Err("the text to replace is empty".into());
        }
        Ok(Value::String(s.replace(from.as_str(), &to)))
    },
    "digits" (1, 1) => |a| Ok(Value::String(
        a.text(0)?.chars().filter(char::is_ascii_digit).collect(),
    )),
    // Lists.
    "len" (1, 1) => |a| match a.value(0)? {
        Value::Array(l) => Ok(Value::from(l.len())),
        Value::Object(m) => Ok(Value::from(m.len())),
        Value::String(s) => Ok(Value::from(s.chars().count())),
        other => Err(format!("expected a list, an object or text, got {}", describe(other)).into()),
    },
    "nth" (2, 2) => |a| {
        let (list, i) = (a.list(0)?, a.int(1)?);
        let idx = if i < 0 { list.len() as i64 + i } else { i };
        usize::try_from(idx)
            .ok()
            .and_then(|k| list.get(k))
            .cloned()
            .ok_or_else(|| format!("index {i} is out of range for a list of {}", list.len()).into())
    },
    "first" (1, 1) => |a| a.list(0)?.first().cloned().ok_or_else(|| "the list is empty".into()),
    "last" (1, 1) => |a| a.list(0)?.last().cloned().ok_or_else(|| "the list is empty".into()),
    "unique" (1, 1) => |a| {
        let mut out: Vec<Value> = Vec::new();
        for v in a.list(0)? {
            if !out.contains(v) {
                out.push(v.clone());
            }
        }
        Ok(Value::Array(out))
    },
    // IPv4 address arithmetic.
    "ipv4_add" (2, 2) => |a| {
        let addr = parse_ipv4(&a.text(0)?)?;
        let n = a.int(1)?;
        let sum = i64::from(u32::from(addr)) + n;
        u32::try_from(sum)
            .map(|x| Value::String(Ipv4Addr::from(x).to_string()))
            .map_err(|_| format!("{addr} + {n} is outside the IPv4 address space").into())
    },
    "ipv4_host" (2, 2) => |a| {
        let (net, prefix) = parse_cidr(&a.text(0)?)?;
        let n = a.int(1)?;
        let size = 1i64 << (32 - prefix);
        // Host numbers exclude the network and broadcast addresses, except in /31 and /32.
        let (lo, hi) = if prefix >= 31 { (0, size - 1) } else { (1, size - 2) };
        if !(lo..=hi).contains(&n) {
            return Err(format!("host {n} is outside {net}/{prefix} (hosts {lo} to {hi})").into());
        }
        Ok(Value::String(Ipv4Addr::from(u32::from(net) + n as u32).to_string()))
    },
    "ipv4_network" (1, 1) => |a| {
        let (net, _) = parse_cidr(&a.text(0)?)?;
        Ok(Value::String(net.to_string()))
    },
    "ipv4_netmask" (1, 1) => |a| {
        let (_, prefix) = parse_cidr(&a.text(0)?)?;
        Ok(Value::String(Ipv4Addr::from(mask(prefix)).to_string()))
    },
    "ipv4_broadcast" (1, 1) => |a| {
        let (net, prefix) = parse_cidr(&a.text(0)?)?;
        Ok(Value::String(Ipv4Addr::from(u32::from(net) | !mask(prefix)).to_string()))
    },
    // Encodings.
    "base64" (1, 1) => |a| Ok(Value::String(
        base64::engine::general_purpose::STANDARD.encode(a.text(0)?),
    )),
    "base64_decode" (1, 1) => |a| {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(a.text(0)?.trim())
            .map_err(|e| format!("not base64: {e}"))?;
        String::from_utf8(bytes)
            .map(Value::String)
            .map_err(|_| "the decoded bytes are not UTF-8 text".into())
    },
    "json" (1, 1) => |a| {
        let v = a.value(0)?;
        let pretty = a.hash_value("pretty")?.is_some_and(|p| p.is_truthy(false));
        let text = if pretty { serde_json::to_string_pretty(v) } else { serde_json::to_string(v) };
        text.map(Value::String).map_err(|e| Fail::Msg(e.to_string()))
    },
}

/// The truthiness of every argument (handlebars': false, 0, "", null, [] are false).
fn truths(a: &Args) -> HResult<Vec<bool>> {
    (0..a.len())
        .map(|i| a.value(i).map(|v| v.is_truthy(false)))
        .collect()
}

/// Orders two arguments: numerically when both are integers (or integer strings), as text
/// when both are text.
fn compare(a: &Args) -> HResult<std::cmp::Ordering> {
    let (x, y) = (a.value(0)?, a.value(1)?);
    if let (Ok(i), Ok(j)) = (to_int(x), to_int(y)) {
        return Ok(i.cmp(&j));
    }
    if let (Some(i), Some(j)) = (x.as_f64(), y.as_f64()) {
        return i
            .partial_cmp(&j)
            .ok_or_else(|| Fail::Msg("cannot compare NaN".into()));
    }
    match (x, y) {
        (Value::String(i), Value::String(j)) => Ok(i.cmp(j)),
        _ => Err(Fail::Msg(format!(
            "cannot compare {} with {}",
            describe(x),
            describe(y)
        ))),
    }
}

/// `range end`, `range start end`, `range start end step`: the integers from `start`
/// (default 0) up to, not including, `end`, by `step` (default 1; may be negative).
fn range(a: &Args) -> HResult<Value> {
    let (start, end, step) = match a.len() {
        1 => (0, a.int(0)?, 1),
        2 => (a.int(0)?, a.int(1)?, 1),
        _ => (a.int(0)?, a.int(1)?, a.int(2)?),
    };
    if step == 0 {
        return Err("the step is 0".into());
    }
    let count = if (step > 0 && end > start) || (step < 0 && end < start) {
        (i128::from(end) - i128::from(start) + i128::from(step) - i128::from(step.signum()))
            / i128::from(step)
    } else {
        0
    };
    if count > i128::from(MAX_RANGE) {
        return Err(format!("{count} items is more than the limit of {MAX_RANGE}").into());
    }
    Ok(Value::Array(
        (0..count as i64)
            .map(|k| Value::from(start + k * step))
            .collect(),
    ))
}

fn parse_ipv4(s: &str) -> Result<Ipv4Addr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{s:?} is not an IPv4 address"))
}

fn mask(prefix: u32) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    }
}

/// `a.b.c.d/p` → (network address, p).
fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u32), String> {
    let bad = || format!("{s:?} is not an IPv4 network (a.b.c.d/prefix)");
    let (addr, prefix) = s.trim().split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let prefix: u32 = prefix.parse().map_err(|_| bad())?;
    if prefix > 32 {
        return Err(bad());
    }
    Ok((Ipv4Addr::from(u32::from(addr) & mask(prefix)), prefix))
}

/// Registers every helper (and the strict `if` / `unless`) on `hb`.
pub fn register(hb: &mut Handlebars<'static>) {
    hb.register_helper(
        "if",
        Box::new(StrictIf {
            name: "if",
            positive: true,
        }),
    );
    hb.register_helper(
        "unless",
        Box::new(StrictIf {
            name: "unless",
            positive: false,
        }),
    );
    hb.register_helper("times", Box::new(Times));
    for &(name, arity, f) in VALUE_HELPERS {
        hb.register_helper(name, Box::new(ValueHelper { name, arity, f }));
    }
}

/// The names of every helper this crate registers, for documentation checks.
pub fn names() -> Vec<&'static str> {
    let mut n = vec!["if", "unless", "times"];
    n.extend(VALUE_HELPERS.iter().map(|(name, _, _)| *name));
    n
}

/// Renders a JSON value the way `{{x}}` does (strings verbatim, numbers as written).
pub fn render_value(v: &Value) -> String {
    v.render()
}
