//! Task schedules in the OpenSVC grammar, with the semantics of the OpenSVC 2.1 agent
//! (`opensvc/core/scheduler.py`; the user documentation is `docs/schedules.md`).
//!
//! ```text
//! value        := "" | "@0" | <sched> | JSON list of <sched>        # "", "@0", null: never
//! <sched>      := ["!"] <timeranges> [<days> [<weeks> [<months>]]]   # 1 to 4 fields
//! <timeranges> := <tr>("," <tr>)*
//! <tr>         := ["~"] ("*" | "" | HH:MM[:SS]["-"HH:MM[:SS]]) ["@" <interval>]
//! <interval>   := minutes, or a duration with units w d h m s ("1h30m", "10s")
//! <days>       := <dow>["-"<dow>][":"<monthday>] ("," ...)*          # mon=1 .. sun=7, ranges wrap
//! <monthday>   := first|1st|second|2nd|third|3rd|fourth|4th|fifth|5th|last|[+-]N
//! <weeks>      := ISO week numbers, ranges and commas, "*"
//! <months>     := ([<month>["-"<month>]] ["%" <modulo> ["+" <shift>]]) ("," ...)*
//! ```
//!
//! All times are civil (wall-clock, local) date-times, as in OpenSVC. Semantics:
//! - a range without `@` runs once per range (interval = range length + 1 s; `*` once a day);
//!   a begin without end is a 1-second range; an end before the begin wraps past midnight;
//! - `@N` alone covers the whole day, every N (minutes by default);
//! - a task may run at `now` when an included member's month, ISO week, day and one of its
//!   time ranges contain `now`, `now >= last + interval` (interval 0: never), and no `!`
//!   member contains `now` (an exclusion holds until the end of its range);
//! - `:N` on a day: the day of the month must equal N (negative counts from the month end,
//!   `last` is -1) **and** the weekday must match; `:0` never matches;
//! - `~`: the start is delayed by a splay in `[0, end - now - 1)`, applied only when the
//!   interval is at least the range length and the range is longer than 2 s. OpenSVC draws it
//!   at random; here it is `remaining * fraction`, the fraction being stable per node
//!   ([`splay_fraction`] of the node id), so a fleet spreads out deterministically;
//! - a member that does not parse is dropped, the others still apply (as OpenSVC does); the
//!   dropped ones are kept in [`Schedule::invalid`] with the token at fault.
//!
//! [`Schedule::next`] is the earliest time at or after `now` when the task may run (then
//! delayed by the splay of the range it falls in), searched up to the end of next year as
//! OpenSVC does; `None` means never.

use std::collections::BTreeSet;

use jiff::civil::{Date, DateTime};

/// Seconds in a day.
pub const DAY: i64 = 86_400;

/// A schedule member that does not parse: the member, the token at fault and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid schedule {member:?}: bad token {token:?}: {reason}")]
pub struct ScheduleError {
    /// The member (one schedule of a list, or the whole expression).
    pub member: String,
    /// The token at fault.
    pub token: String,
    /// What is wrong with it.
    pub reason: String,
}

/// One time range of a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeRange {
    /// Begin, seconds since midnight.
    pub begin: i64,
    /// End (inclusive), seconds since midnight; before `begin` when the range wraps midnight.
    pub end: i64,
    /// Minimum seconds between two runs (0: never).
    pub interval: i64,
    /// `~`: the start is delayed by a splay.
    pub probabilistic: bool,
    /// How to show it (`09:00-09:20`).
    pub text: String,
}

/// A day constraint: a weekday (1 = Monday .. 7 = Sunday), optionally a day of the month.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Day {
    /// ISO weekday, 1..=7.
    pub weekday: i64,
    /// Day of the month; negative counts from the end (-1 = last).
    pub monthday: Option<i64>,
}

/// One schedule of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// As written.
    pub raw: String,
    /// `!`: an exclusion.
    pub exclude: bool,
    /// Time ranges (any of them).
    pub timeranges: Vec<TimeRange>,
    /// Allowed days (any of them).
    pub days: Vec<Day>,
    /// Allowed ISO weeks.
    pub weeks: BTreeSet<i64>,
    /// Allowed months (values outside 1..=12 never match).
    pub months: BTreeSet<i64>,
}

/// A parsed schedule expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// As written.
    pub raw: String,
    /// The members that parsed, in order.
    pub members: Vec<Member>,
    /// The members dropped because they do not parse.
    pub invalid: Vec<ScheduleError>,
}

/// Whether a task may run at a given time, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It may run; after `delay` seconds (the splay of a `~` range).
    Allowed {
        /// The member that allows it.
        member: String,
        /// Splay, seconds.
        delay: i64,
    },
    /// A `!` member holds until `until`.
    Excluded {
        /// The excluding member.
        member: String,
        /// The end of its range.
        until: DateTime,
    },
    /// No member allows it: the reasons, member by member.
    NotAllowed(String),
}

// ------------------------------------------------------------------------------------------
// Parsing

const ALL_WEEKDAYS: [i64; 7] = [1, 2, 3, 4, 5, 6, 7];

/// Python's `int()` of a string: surrounding whitespace, a sign, ASCII digits, single
/// underscores between digits.
fn py_int(s: &str) -> Option<i64> {
    let s = s.trim();
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
        || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'_')
    {
        return None;
    }
    let v: i64 = digits.replace('_', "").parse().ok()?;
    Some(if neg { -v } else { v })
}

/// `HH:MM[:SS]` to seconds, as Python's `strptime("%H:%M:%S")` reads it (one or two digits,
/// hours 0-23, minutes 0-59, seconds 0-61).
fn time_to_seconds(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split(':').collect();
    let (h, m, sec) = match parts.as_slice() {
        [h, m] => (*h, *m, "0"),
        [h, m, s] => (*h, *m, *s),
        _ => return None,
    };
    let field = |t: &str, max: i64| -> Option<i64> {
        if t.is_empty() || t.len() > 2 || !t.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let v: i64 = t.parse().ok()?;
        (v <= max).then_some(v)
    };
    Some(field(h, 23)? * 3600 + field(m, 59)? * 60 + field(sec, 61)?)
}

fn seconds_text(s: i64) -> String {
    format!("{:02}:{:02}:{:02}", s / 3600, (s % 3600) / 60, s % 60)
}

/// The default interval of a range: its length plus one second.
fn range_length(begin: i64, end: i64) -> i64 {
    if begin > end {
        DAY - begin + end + 1
    } else {
        end - begin + 1
    }
}

type Bad = (String, String);

fn bad(token: &str, reason: impl Into<String>) -> Bad {
    (token.to_string(), reason.into())
}

/// Calendar names: months and weekdays share one table (so `jan` is also Monday, as in
/// OpenSVC).
fn calendar_name(name: &str) -> Result<i64, Bad> {
    if let Some(i) = py_int(name) {
        return Ok(i);
    }
    let v = match name.to_lowercase().as_str() {
        "jan" | "january" | "mon" | "monday" => 1,
        "feb" | "february" | "tue" | "tuesday" => 2,
        "mar" | "march" | "wed" | "wednesday" => 3,
        "apr" | "april" | "thu" | "thursday" => 4,
        "may" | "fri" | "friday" => 5,
        "jun" | "june" | "sat" | "saturday" => 6,
        "jul" | "july" | "sun" | "sunday" => 7,
        "aug" | "august" => 8,
        "sep" | "september" => 9,
        "oct" | "october" => 10,
        "nov" | "november" => 11,
        "dec" | "december" => 12,
        _ => return Err(bad(name, "unknown calendar name")),
    };
    Ok(v)
}

/// `a,b-c,...`; `None` for `*` or empty (everything). A range whose end is before its begin
/// wraps (`sun-tue` = 7,1,2; `nov-feb` = 11,12,1,2), `max` being the last value of the cycle.
fn calendar_expression(spec: &str, max: i64) -> Result<Option<BTreeSet<i64>>, Bad> {
    if spec == "*" || spec.is_empty() {
        return Ok(None);
    }
    let mut out = BTreeSet::new();
    for sub in spec.split(',') {
        let dashes = sub.chars().skip(1).filter(|c| *c == '-').count();
        match dashes {
            0 => {
                out.insert(calendar_name(sub)?);
            }
            1 => {
                let parts: Vec<&str> = sub.split('-').collect();
                let [b, e] = parts.as_slice() else {
                    return Err(bad(sub, "malformed range"));
                };
                let (b, e) = (calendar_name(b)?, calendar_name(e)?);
                if b <= e {
                    out.extend(b..=e);
                } else {
                    out.extend(b..=max);
                    out.extend(1..=e);
                }
            }
            _ => return Err(bad(sub, "only one '-' allowed in a range")),
        }
    }
    Ok(Some(out))
}

/// An interval: a bare number is minutes; else `<n><unit>...` with units w d h m s (digits
/// after the last unit are ignored, as OpenSVC does).
fn interval_seconds(s: &str) -> Result<i64, Bad> {
    if let Some(n) = py_int(s) {
        return Ok(n.saturating_mul(60));
    }
    let lower = s.to_lowercase();
    let mut total: i64 = 0;
    let mut prev = 0;
    for (idx, ch) in lower.char_indices() {
        let unit = match ch {
            'w' => 604_800,
            'd' => 86_400,
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => continue,
        };
        let n = py_int(&lower[prev..idx])
            .ok_or_else(|| bad(s, "not a duration (e.g. 10, 1h30m, 10s)"))?;
        total = total.saturating_add(n.saturating_mul(unit));
        prev = idx + ch.len_utf8();
    }
    Ok(total)
}

/// `begin[-end]`, `*` or empty: (begin, end) in seconds.
fn parse_begin_end(spec: &str) -> Result<(i64, i64), Bad> {
    if spec == "*" || spec.is_empty() {
        return Ok((0, DAY - 1));
    }
    let parts: Vec<&str> = if spec.contains('-') {
        spec.split('-').collect()
    } else {
        vec![spec, spec]
    };
    let [b, e] = parts.as_slice() else {
        return Err(bad(spec, "a time range is HH:MM[:SS]-HH:MM[:SS]"));
    };
    let begin = time_to_seconds(b).ok_or_else(|| bad(b, "malformed time (HH:MM[:SS])"))?;
    let mut end = time_to_seconds(e).ok_or_else(|| bad(e, "malformed time (HH:MM[:SS])"))?;
    if begin == end {
        end += 1;
        if end >= DAY {
            return Err(bad(spec, "a one-second range must start before 23:59:59"));
        }
    }
    Ok((begin, end))
}

fn parse_timeranges(spec: &str) -> Result<Vec<TimeRange>, Bad> {
    let mut out = Vec::new();
    for sub in spec.split(',') {
        let mut tr = TimeRange {
            begin: 0,
            end: DAY - 60, // "00:00-23:59", as OpenSVC's `*`
            interval: DAY,
            probabilistic: false,
            text: "00:00-23:59".into(),
        };
        if sub.is_empty() {
            out.push(tr);
            continue;
        }
        let mut s = sub;
        if let Some(rest) = s.strip_prefix('~') {
            tr.probabilistic = true;
            s = rest;
        }
        if s == "*" {
            out.push(tr);
            continue;
        }
        let at: Vec<&str> = s.split('@').collect();
        match at.as_slice() {
            [range] => {
                let (b, e) = parse_begin_end(range)?;
                tr.begin = b;
                tr.end = e;
                tr.interval = range_length(b, e);
                if tr.interval <= 2 {
                    tr.probabilistic = false;
                }
            }
            [range, interval] => {
                let (b, e) = parse_begin_end(range)?;
                tr.begin = b;
                tr.end = e;
                tr.interval = interval_seconds(interval)?;
                let len = range_length(b, e);
                if len <= 2 || tr.interval < len {
                    tr.probabilistic = false;
                }
            }
            _ => return Err(bad(sub, "only one @<interval> allowed")),
        }
        tr.text = format!("{}-{}", seconds_text(tr.begin), seconds_text(tr.end));
        out.push(tr);
    }
    Ok(out)
}

fn parse_days(spec: &str) -> Result<Vec<Day>, Bad> {
    let mut out = Vec::new();
    for e in spec.split(',') {
        let (dow, monthday) = match e.matches(':').count() {
            0 => (e, None),
            1 => {
                let (dow, md) = e.split_once(':').expect("one colon");
                if md.is_empty() {
                    return Err(bad(e, "the day of month after ':' is empty"));
                }
                let n = match md {
                    "first" | "1st" => 1,
                    "second" | "2nd" => 2,
                    "third" | "3rd" => 3,
                    "fourth" | "4th" => 4,
                    "fifth" | "5th" => 5,
                    "last" => -1,
                    other => py_int(other).ok_or_else(|| {
                        bad(
                            other,
                            "day of month is not a number (or first..fifth, last)",
                        )
                    })?,
                };
                (dow, Some(n))
            }
            _ => return Err(bad(e, "only one ':' allowed in a day")),
        };
        let days = calendar_expression(dow, 7)?;
        let weekdays: Vec<i64> = match days {
            None => ALL_WEEKDAYS.to_vec(),
            Some(set) => set.into_iter().filter(|d| (1..=7).contains(d)).collect(),
        };
        out.extend(
            weekdays
                .into_iter()
                .map(|weekday| Day { weekday, monthday }),
        );
    }
    Ok(out)
}

fn parse_weeks(spec: &str) -> Result<BTreeSet<i64>, Bad> {
    Ok(match calendar_expression(spec, 53)? {
        None => (1..=53).collect(),
        Some(set) => set.into_iter().filter(|w| (1..=53).contains(w)).collect(),
    })
}

fn parse_months(spec: &str) -> Result<BTreeSet<i64>, Bad> {
    let mut out = BTreeSet::new();
    for sub in spec.split(',') {
        let (months, modulo) = match sub.matches('%').count() {
            0 => (sub, None),
            1 => {
                let (m, md) = sub.split_once('%').expect("one %");
                (m, Some(md))
            }
            _ => return Err(bad(sub, "only one '%' allowed in a month")),
        };
        let mut set: BTreeSet<i64> = if months.is_empty() || months == "*" {
            (1..=12).collect()
        } else {
            calendar_expression(months, 12)?.unwrap_or_else(|| (1..=12).collect())
        };
        if let Some(md) = modulo {
            let (m, shift) = match md.matches('+').count() {
                0 => (md, "0"),
                1 => md.split_once('+').expect("one +"),
                _ => return Err(bad(md, "only one '+' allowed in a modulo")),
            };
            let m = py_int(m).ok_or_else(|| bad(m, "modulo is not a number"))?;
            let shift = py_int(shift).ok_or_else(|| bad(shift, "shift is not a number"))?;
            if m == 0 {
                return Err(bad(md, "modulo by zero"));
            }
            set.retain(|v| (v + shift) % m == 0);
        }
        out.extend(set);
    }
    Ok(out)
}

fn parse_member(raw: &str) -> Result<Option<Member>, ScheduleError> {
    let err = |(token, reason): Bad| ScheduleError {
        member: raw.to_string(),
        token,
        reason,
    };
    let mut s = raw.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let exclude = match s.strip_prefix('!') {
        Some(rest) => {
            s = rest.trim();
            true
        }
        None => false,
    };
    if s.is_empty() {
        return Ok(None);
    }
    let fields: Vec<&str> = s.split_whitespace().collect();
    if fields.len() > 4 {
        return Err(err(bad(
            fields[4],
            format!(
                "too many fields ({}): a schedule is TIMERANGES [DAYS [WEEKS [MONTHS]]]",
                fields.len()
            ),
        )));
    }
    let timeranges = parse_timeranges(fields[0]).map_err(err)?;
    let days = match fields.get(1) {
        Some(d) => parse_days(d).map_err(err)?,
        None => ALL_WEEKDAYS
            .iter()
            .map(|&weekday| Day {
                weekday,
                monthday: None,
            })
            .collect(),
    };
    let weeks = match fields.get(2) {
        Some(w) => parse_weeks(w).map_err(err)?,
        None => (1..=53).collect(),
    };
    let months = match fields.get(3) {
        Some(m) => parse_months(m).map_err(err)?,
        None => (1..=12).collect(),
    };
    Ok(Some(Member {
        raw: raw.to_string(),
        exclude,
        timeranges,
        days,
        weeks,
        months,
    }))
}

impl Schedule {
    /// Parses an expression: a schedule, or a JSON list of schedules. Never fails: members
    /// that do not parse are dropped (see [`Schedule::invalid`]).
    pub fn parse(raw: &str) -> Schedule {
        let mut sched = Schedule {
            raw: raw.to_string(),
            members: Vec::new(),
            invalid: Vec::new(),
        };
        let items: Vec<serde_json::Value> = match serde_json::from_str::<serde_json::Value>(raw) {
            Ok(serde_json::Value::Array(list)) => list,
            Ok(serde_json::Value::Null) => Vec::new(),
            Ok(v @ serde_json::Value::String(_)) => vec![v],
            Ok(other) => vec![other],
            Err(_) => vec![serde_json::Value::String(raw.to_string())],
        };
        if let [serde_json::Value::String(s)] = items.as_slice()
            && (s.is_empty() || s == "@0")
        {
            return sched;
        }
        for item in items {
            match item {
                serde_json::Value::String(s) => match parse_member(&s) {
                    Ok(Some(m)) => sched.members.push(m),
                    Ok(None) => {}
                    Err(e) => sched.invalid.push(e),
                },
                other => sched.invalid.push(ScheduleError {
                    member: other.to_string(),
                    token: other.to_string(),
                    reason: "a schedule is a string".into(),
                }),
            }
        }
        sched
    }

    /// Parses, failing on the first member that does not parse.
    pub fn parse_strict(raw: &str) -> Result<Schedule, ScheduleError> {
        let s = Schedule::parse(raw);
        match s.invalid.first() {
            Some(e) => Err(e.clone()),
            None => Ok(s),
        }
    }

    /// No member can ever allow a run (`""`, `@0`, only exclusions, only invalid members).
    pub fn is_never(&self) -> bool {
        !self
            .members
            .iter()
            .any(|m| !m.exclude && m.timeranges.iter().any(|t| t.interval != 0))
    }

    /// May the task run at `now`, given its last run?
    pub fn check(&self, now: DateTime, last: Option<DateTime>, fraction: f64) -> Verdict {
        let now = truncate(now);
        let date = now.date();
        let sec = day_seconds(now);
        for m in self.members.iter().filter(|m| m.exclude) {
            if m.day_reason(date).is_some() {
                continue;
            }
            if let Some(tr) = m.timeranges.iter().find(|t| t.contains(sec)) {
                return Verdict::Excluded {
                    member: m.raw.clone(),
                    until: from_civil_secs(civil_secs(now) + tr.remaining(sec)),
                };
            }
        }
        if !self.members.iter().any(|m| !m.exclude) {
            return Verdict::NotAllowed(if self.invalid.is_empty() {
                "no schedule: never".into()
            } else {
                "no valid schedule: never".into()
            });
        }
        let mut reasons = Vec::new();
        for m in self.members.iter().filter(|m| !m.exclude) {
            if let Some(r) = m.day_reason(date) {
                reasons.push(r.to_string());
                continue;
            }
            let mut errs = Vec::new();
            for tr in &m.timeranges {
                if !tr.contains(sec) {
                    errs.push(format!("not in timerange {}", tr.text));
                } else if tr.interval == 0 {
                    errs.push("interval set to 0".to_string());
                } else if let Some(l) = last
                    && civil_secs(now) < civil_secs(truncate(l)).saturating_add(tr.interval)
                {
                    errs.push("last run is too soon".to_string());
                } else {
                    return Verdict::Allowed {
                        member: m.raw.clone(),
                        delay: tr.splay(sec, fraction),
                    };
                }
            }
            reasons.push(errs.join(", "));
        }
        Verdict::NotAllowed(reasons.join(", "))
    }

    /// The earliest time at or after `now` the task may run, delayed by the splay of its
    /// range (`fraction` in `[0, 1)`); `None`: not before the end of next year (never).
    pub fn next(&self, now: DateTime, last: Option<DateTime>, fraction: f64) -> Option<DateTime> {
        let now = truncate(now);
        let (t0, tr) = self.earliest(civil_secs(now), last.map(|l| civil_secs(truncate(l))))?;
        let delay = tr.splay(t0.rem_euclid(DAY), fraction);
        if delay == 0 {
            return Some(from_civil_secs(t0));
        }
        let t1 = t0 + delay;
        // The delay never leaves the range; an exclusion inside it pushes further.
        match self.earliest(t1, last.map(|l| civil_secs(truncate(l)))) {
            Some((t, _)) => Some(from_civil_secs(t)),
            None => Some(from_civil_secs(t1)),
        }
    }

    /// The earliest allowed civil second at or after `from`, with the range it falls in.
    fn earliest(&self, from: i64, last: Option<i64>) -> Option<(i64, TimeRange)> {
        let start_day = from.div_euclid(DAY);
        let start_date = from_civil_secs(from).date();
        let end_year = i64::from(start_date.year()) + 1;
        let mut day = start_day;
        loop {
            let date = from_civil_secs(day * DAY).date();
            if i64::from(date.year()) > end_year {
                return None;
            }
            let base = day * DAY;
            // Allowed candidates of this day: (start, end, range), from the included members.
            let mut cands: Vec<(i64, i64, &TimeRange)> = Vec::new();
            let mut excl: Vec<(i64, i64)> = Vec::new();
            for m in &self.members {
                if m.day_reason(date).is_some() {
                    continue;
                }
                for tr in &m.timeranges {
                    for (a, b) in tr.segments() {
                        let (a, b) = (base + a, base + b);
                        if m.exclude {
                            excl.push((a, b));
                            continue;
                        }
                        if tr.interval == 0 {
                            continue;
                        }
                        let mut lo = a.max(from);
                        if let Some(l) = last {
                            lo = lo.max(l.saturating_add(tr.interval));
                        }
                        if lo <= b {
                            cands.push((lo, b, tr));
                        }
                    }
                }
            }
            // PY prefers, at a same instant, the range with the smallest interval, then begin.
            cands.sort_by_key(|(lo, _, tr)| (*lo, tr.interval, tr.begin));
            let mut best: Option<(i64, &TimeRange)> = None;
            for (lo, hi, tr) in cands {
                let mut p = lo;
                while let Some(&(_, y)) = excl.iter().find(|(x, y)| *x <= p && p <= *y) {
                    p = y + 1;
                }
                if p <= hi && best.is_none_or(|(bp, _)| p < bp) {
                    best = Some((p, tr));
                }
            }
            if let Some((p, tr)) = best {
                return Some((p, tr.clone()));
            }
            day += 1;
        }
    }
}

impl Member {
    /// Why `date` is not one of this member's days, if it is not.
    fn day_reason(&self, date: Date) -> Option<&'static str> {
        if !self.months.contains(&i64::from(date.month())) {
            return Some("not in allowed months");
        }
        if !self.weeks.contains(&i64::from(date.iso_week_date().week())) {
            return Some("not in allowed weeks");
        }
        let weekday = i64::from(date.weekday().to_monday_one_offset());
        let dim = i64::from(date.days_in_month());
        let ok = self.days.iter().any(|d| {
            d.weekday == weekday
                && d.monthday.is_none_or(|md| {
                    let md = if md > 0 || md.abs() > dim {
                        md
                    } else {
                        dim + md + 1
                    };
                    md == i64::from(date.day())
                })
        });
        (!ok).then_some("not in allowed days")
    }
}

impl TimeRange {
    /// Whether second-of-day `sec` is in the range (ends inclusive).
    pub fn contains(&self, sec: i64) -> bool {
        if self.begin <= self.end {
            sec >= self.begin && sec <= self.end
        } else {
            (sec >= self.begin && sec <= DAY) || (sec >= 0 && sec <= self.end)
        }
    }

    /// The range within one day, as inclusive second-of-day segments.
    fn segments(&self) -> Vec<(i64, i64)> {
        let last = DAY - 1;
        if self.begin <= self.end {
            if self.begin > last {
                return Vec::new();
            }
            vec![(self.begin, self.end.min(last))]
        } else {
            let mut v = vec![(0, self.end.min(last))];
            if self.begin <= last {
                v.push((self.begin, last));
            }
            v
        }
    }

    /// Seconds from `sec` to the end of the range (an exclusion's hold).
    fn remaining(&self, sec: i64) -> i64 {
        let end = if self.begin > self.end {
            self.end + DAY
        } else {
            self.end
        };
        let s = if sec < self.begin { sec + DAY } else { sec };
        end - s
    }

    /// The splay of a `~` range at `sec`: `remaining * fraction`, remaining = end - sec - 1;
    /// none when the range is not `~`, when less than 1 s remains, or when the interval is
    /// shorter than the range (the task is meant to run several times in it).
    pub fn splay(&self, sec: i64, fraction: f64) -> i64 {
        if !self.probabilistic {
            return 0;
        }
        let (begin, mut end, mut s) = (self.begin, self.end, sec);
        if begin > end {
            end += DAY;
        }
        if s < begin {
            s += DAY;
        }
        let length = end - begin;
        let remaining = end - s - 1;
        if remaining < 1 || self.interval < length {
            return 0;
        }
        let f = fraction.clamp(0.0, 1.0 - f64::EPSILON);
        (remaining as f64 * f) as i64
    }
}

// ------------------------------------------------------------------------------------------
// Civil time helpers

/// Drops sub-second precision.
pub fn truncate(dt: DateTime) -> DateTime {
    dt.with().subsec_nanosecond(0).build().unwrap_or(dt)
}

fn day_seconds(dt: DateTime) -> i64 {
    i64::from(dt.hour()) * 3600 + i64::from(dt.minute()) * 60 + i64::from(dt.second())
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Seconds since 1970-01-01 00:00:00 on the civil (wall clock) time line.
pub fn civil_secs(dt: DateTime) -> i64 {
    days_from_civil(
        i64::from(dt.year()),
        i64::from(dt.month()),
        i64::from(dt.day()),
    ) * DAY
        + day_seconds(dt)
}

/// The inverse of [`civil_secs`] (clamped to jiff's range).
pub fn from_civil_secs(s: i64) -> DateTime {
    let (y, m, d) = civil_from_days(s.div_euclid(DAY));
    let r = s.rem_euclid(DAY);
    let y = y.clamp(-9999, 9999) as i16;
    DateTime::new(
        y,
        m as i8,
        d as i8,
        (r / 3600) as i8,
        ((r % 3600) / 60) as i8,
        (r % 60) as i8,
        0,
    )
    .unwrap_or(DateTime::MAX)
}

/// `YYYY-MM-DD HH:MM[:SS]` (or with a `T`), as `explain --now/--last` take it.
pub fn parse_datetime(s: &str) -> Option<DateTime> {
    let s = s.trim();
    let (d, t) = s.split_once([' ', 'T'])?;
    let dp: Vec<&str> = d.split('-').collect();
    let [y, mo, da] = dp.as_slice() else {
        return None;
    };
    let secs = time_to_seconds(t.trim()).filter(|s| *s < DAY)?;
    let (y, mo, da): (i16, i8, i8) = (y.parse().ok()?, mo.parse().ok()?, da.parse().ok()?);
    DateTime::new(
        y,
        mo,
        da,
        (secs / 3600) as i8,
        ((secs % 3600) / 60) as i8,
        (secs % 60) as i8,
        0,
    )
    .ok()
}

/// `YYYY-MM-DD HH:MM:SS`.
pub fn format_datetime(dt: DateTime) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    )
}

/// The splay fraction of a node, in `[0, 1)`: a hash of its id (FNV-1a, then a 64-bit
/// finaliser), so every node of a fleet gets its own stable offset in a `~` window.
pub fn splay_fraction(node_id: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node_id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// What `tenet schedule explain` prints.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Explanation {
    /// May the task run at `now`?
    pub allowed: bool,
    /// Why (or why not).
    pub reason: String,
    /// When it next may (`YYYY-MM-DD HH:MM:SS`), splay included; `None`: never.
    pub next: Option<String>,
}

impl Schedule {
    /// Explains the schedule at `now` given `last`.
    pub fn explain(&self, now: DateTime, last: Option<DateTime>, fraction: f64) -> Explanation {
        let next = self.next(now, last, fraction).map(format_datetime);
        match self.check(now, last, fraction) {
            Verdict::Allowed { member, delay } => Explanation {
                allowed: true,
                reason: if delay > 0 {
                    format!(
                        "allowed by {member:?}, after a splay of {delay} s (this node's offset in the ~ range)"
                    )
                } else {
                    format!("allowed by {member:?}")
                },
                next,
            },
            Verdict::Excluded { member, until } => Explanation {
                allowed: false,
                reason: format!(
                    "excluded by schedule member {member:?} until {}",
                    format_datetime(until)
                ),
                next,
            },
            Verdict::NotAllowed(why) => Explanation {
                allowed: false,
                reason: why,
                next,
            },
        }
    }
}

#[cfg(test)]
mod tests;
