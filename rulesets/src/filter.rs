//! Filterset evaluation against [`NodeFacts`]: decides where contextual rulesets apply.
//!
//! Semantics follow the OpenSVC collector's matcher (strict left to right, no precedence, an
//! empty filterset is false), except that `!=`, `NOT LIKE` and `NOT IN` on multi-row tables
//! (`packages`, `tags`) mean "no row matches" — "node has no package named X" — rather than the
//! collector's "some row differs", which is true on almost every node.

use crate::error::{Error, Result};
use crate::model::*;
use std::collections::{HashMap, HashSet};

/// Whether the filterset named `filterset` matches the facts. Errors when it (or a nested
/// filterset) does not exist, or when nesting loops. To evaluate several filtersets against
/// the same facts, keep one [`Evaluator`]: shared nested filtersets are then evaluated once.
pub fn matches(bundle: &Bundle, filterset: &str, facts: &NodeFacts) -> Result<bool> {
    Evaluator::new(bundle, facts).matches(filterset)
}

/// Filterset evaluation against one set of facts, memoised: each filterset is evaluated at
/// most once, however many filtersets nest it (a "diamond" `f(i) = f(i+1) AND f(i+1)` costs
/// one evaluation per level, not 2^depth). Nesting is walked with an explicit stack, so a
/// chain of any depth cannot overflow the thread's stack (bundles that were validated are
/// limited to [`crate::model::MAX_NESTING_DEPTH`] levels anyway).
pub struct Evaluator<'a> {
    bundle: &'a Bundle,
    facts: &'a NodeFacts,
    memo: HashMap<&'a str, bool>,
    evaluations: usize,
}

/// One filterset being evaluated: where it is in its entries, and its accumulator.
struct Frame<'a> {
    name: &'a str,
    entries: &'a [FilterEntry],
    next: usize,
    acc: Option<bool>,
}

impl<'a> Evaluator<'a> {
    /// An evaluator with an empty memo.
    pub fn new(bundle: &'a Bundle, facts: &'a NodeFacts) -> Self {
        Evaluator {
            bundle,
            facts,
            memo: HashMap::new(),
            evaluations: 0,
        }
    }

    /// How many filtersets were evaluated so far (each at most once).
    pub fn evaluations(&self) -> usize {
        self.evaluations
    }

    /// Whether the filterset named `name` matches; see [`matches()`].
    pub fn matches(&mut self, name: &str) -> Result<bool> {
        if let Some(m) = self.memo.get(name) {
            return Ok(*m);
        }
        let root = self.frame(name)?;
        // The names of `stack`, to find a cycle without scanning it.
        let mut on_stack: HashSet<&'a str> = HashSet::from([root.name]);
        let mut stack: Vec<Frame<'a>> = vec![root];
        // The result of the frame just finished, for its parent's pending entry.
        let mut returned: Option<bool> = None;
        while let Some(top) = stack.last_mut() {
            let entry = top.entries.get(top.next);
            let x = match (returned.take(), entry) {
                (Some(x), _) => x,
                (None, None) => {
                    // Every entry done: memoise, and hand the result to the parent.
                    let (name, done) = (top.name, top.acc.unwrap_or(false));
                    stack.pop();
                    on_stack.remove(name);
                    self.memo.insert(name, done);
                    self.evaluations += 1;
                    if stack.is_empty() {
                        return Ok(done);
                    }
                    returned = Some(done);
                    continue;
                }
                (None, Some(entry)) => match &entry.test {
                    FilterTest::Filter(f) => eval_filter(f, self.facts),
                    FilterTest::Filterset(child) => match self.memo.get(child.as_str()) {
                        Some(m) => *m,
                        None => {
                            // Evaluate the child first; this entry stays pending until then.
                            if on_stack.contains(child.as_str()) {
                                let at = stack.iter().position(|f| f.name == child).unwrap_or(0);
                                let mut cycle: Vec<&str> =
                                    stack[at..].iter().map(|f| f.name).collect();
                                cycle.push(child);
                                return Err(Error::Invalid {
                                    context: format!("filterset {child}"),
                                    message: format!("nesting cycle: {}", cycle.join(" -> ")),
                                });
                            }
                            let frame = self.frame(child)?;
                            on_stack.insert(frame.name);
                            stack.push(frame);
                            continue;
                        }
                    },
                },
            };
            let Some(top) = stack.last_mut() else { break };
            let logical_op = top.entries[top.next].logical_op;
            top.acc = Some(match (top.acc, logical_op) {
                // The first entry starts the accumulator; a NOT op negates it.
                (None, LogicalOp::And | LogicalOp::Or) => x,
                (None, LogicalOp::AndNot | LogicalOp::OrNot) => !x,
                (Some(a), LogicalOp::And) => a && x,
                (Some(a), LogicalOp::Or) => a || x,
                (Some(a), LogicalOp::AndNot) => a && !x,
                (Some(a), LogicalOp::OrNot) => a || !x,
            });
            top.next += 1;
        }
        // Not reached: the root frame returns when it finishes.
        Ok(false)
    }

    fn frame(&self, name: &str) -> Result<Frame<'a>> {
        let (key, fs) =
            self.bundle
                .filtersets
                .get_key_value(name)
                .ok_or_else(|| Error::NotFound {
                    kind: "filterset",
                    name: name.to_string(),
                })?;
        Ok(Frame {
            name: key.as_str(),
            entries: &fs.filters,
            next: 0,
            acc: None,
        })
    }
}

/// One filter against the facts. Unknown tables never match.
pub fn eval_filter(f: &Filter, facts: &NodeFacts) -> bool {
    let field = f.field.as_str();
    match f.table.as_str() {
        "nodes" => compare(
            facts.node.get(field).map_or("", String::as_str),
            f.op,
            &f.value,
        ),
        "services" | "svcmon" => match &facts.service {
            Some(svc) => compare(svc.get(field).map_or("", String::as_str), f.op, &f.value),
            None => false,
        },
        "packages" => any_or_none(
            facts.packages.iter().map(|p| match field {
                "pkg_name" => p.name.as_str(),
                "pkg_version" => p.version.as_str(),
                "pkg_arch" => p.arch.as_str(),
                _ => "",
            }),
            f,
        ),
        "tags" | "v_tags" => any_or_none(
            facts
                .tags
                .iter()
                .map(|t| if field == "tag_name" { t.as_str() } else { "" }),
            f,
        ),
        _ => false,
    }
}

/// Positive ops: some row satisfies it. Negative ops: no row satisfies the positive op.
fn any_or_none<'a>(mut rows: impl Iterator<Item = &'a str>, f: &Filter) -> bool {
    match positive(f.op) {
        Some(pos) => !rows.any(|r| compare(r, pos, &f.value)),
        None => rows.any(|r| compare(r, f.op, &f.value)),
    }
}

/// The positive op of a negative one.
fn positive(op: FilterOp) -> Option<FilterOp> {
    match op {
        FilterOp::Ne => Some(FilterOp::Eq),
        FilterOp::NotLike => Some(FilterOp::Like),
        FilterOp::NotIn => Some(FilterOp::In),
        _ => None,
    }
}

/// `fact op value`.
pub fn compare(fact: &str, op: FilterOp, value: &str) -> bool {
    match op {
        FilterOp::Eq => fact == value,
        FilterOp::Ne => fact != value,
        FilterOp::Like => like(fact, value),
        FilterOp::NotLike => !like(fact, value),
        FilterOp::In => value.split(',').any(|v| v.trim() == fact),
        FilterOp::NotIn => !value.split(',').any(|v| v.trim() == fact),
        FilterOp::Lt => order(fact, value).is_lt(),
        FilterOp::Le => order(fact, value).is_le(),
        FilterOp::Gt => order(fact, value).is_gt(),
        FilterOp::Ge => order(fact, value).is_ge(),
    }
}

/// Numeric order when both sides are finite numbers, else string order.
fn order(a: &str, b: &str) -> std::cmp::Ordering {
    let num = |s: &str| s.trim().parse::<f64>().ok().filter(|f| f.is_finite());
    match (num(a), num(b)) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        _ => a.cmp(b),
    }
}

#[derive(Debug, PartialEq)]
enum Tok {
    Any,
    One,
    Lit(char),
}

/// SQL `LIKE`, case-insensitive like MySQL's default collation: `%` any run, `_` one
/// character, `\` escapes the next character.
pub fn like(text: &str, pattern: &str) -> bool {
    if text.is_ascii() && pattern.is_ascii() {
        // The common case, without allocating: package names and facts are ASCII, and this
        // runs once per package per filter.
        like_ascii(text.as_bytes(), pattern.as_bytes())
    } else {
        like_general(text, pattern)
    }
}

/// [`like`] on ASCII text and pattern, reading the pattern in place (`\x` is one literal).
fn like_ascii(text: &[u8], pat: &[u8]) -> bool {
    let (mut t, mut p) = (0, 0);
    // Where to resume after the last `%`: (pattern index after it, text index it swallowed to).
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = match pat.get(p) {
            Some(b'%') => {
                p += 1;
                star = Some((p, t));
                continue;
            }
            Some(b'_') => Some(1),
            Some(b'\\') => {
                // A trailing backslash is a literal backslash.
                let (c, len) = pat.get(p + 1).map_or((b'\\', 1), |c| (*c, 2));
                c.eq_ignore_ascii_case(&text[t]).then_some(len)
            }
            Some(c) => c.eq_ignore_ascii_case(&text[t]).then_some(1),
            None => None,
        };
        match (step, star) {
            (Some(len), _) => {
                t += 1;
                p += len;
            }
            (None, Some((sp, st))) => {
                p = sp;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            (None, None) => return false,
        }
    }
    pat[p..].iter().all(|&c| c == b'%')
}

/// [`like`] for any text: Unicode lower-casing, patterns as tokens.
fn like_general(text: &str, pattern: &str) -> bool {
    let text: Vec<char> = text.chars().flat_map(char::to_lowercase).collect();
    let mut pat = Vec::new();
    let mut chars = pattern.chars().flat_map(char::to_lowercase);
    while let Some(c) = chars.next() {
        pat.push(match c {
            '%' => Tok::Any,
            '_' => Tok::One,
            '\\' => Tok::Lit(chars.next().unwrap_or('\\')),
            c => Tok::Lit(c),
        });
    }
    // Greedy wildcard matching with one backtrack point: O(len(text) * len(pattern)).
    let (mut t, mut p) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pat.get(p) {
            Some(Tok::Any) => {
                star = Some((p, t));
                p += 1;
            }
            Some(Tok::One) => {
                t += 1;
                p += 1;
            }
            Some(Tok::Lit(c)) if *c == text[t] => {
                t += 1;
                p += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pat[p..].iter().all(|t| *t == Tok::Any)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn filter(table: &str, field: &str, op: FilterOp, value: &str) -> Filter {
        Filter {
            table: table.into(),
            field: field.into(),
            op,
            value: value.into(),
            id: None,
        }
    }

    fn entry(op: LogicalOp, test: FilterTest) -> FilterEntry {
        FilterEntry {
            logical_op: op,
            order: 0,
            test,
        }
    }

    fn bundle(sets: Vec<(&str, Vec<FilterEntry>)>) -> Bundle {
        let mut b = Bundle::default();
        for (name, filters) in sets {
            b.filtersets.insert(
                name.into(),
                Filterset {
                    name: name.into(),
                    stats: false,
                    id: None,
                    filters,
                },
            );
        }
        b
    }

    fn facts() -> NodeFacts {
        let mut f = NodeFacts::default();
        f.node.insert("os_name".into(), "Linux".into());
        f.node.insert("mem_bytes".into(), "8192".into());
        f.packages.push(PackageFact {
            name: "systemd".into(),
            version: "252".into(),
            arch: "amd64".into(),
        });
        f.tags.push("prod".into());
        f
    }

    #[test]
    fn like_patterns() {
        assert!(like("Linux", "lin%"));
        assert!(like("Linux", "L_N_X"));
        assert!(like("", "%"));
        assert!(!like("Linux", "lin"));
        assert!(like("a%b", "a\\%b"));
        assert!(!like("axb", "a\\%b"));
        assert!(like("abcabc", "%b%c"));
        assert!(!like("abc", "%d%"));
    }

    #[test]
    fn comparisons() {
        assert!(compare("9", FilterOp::Lt, "10"));
        assert!(!compare("b9", FilterOp::Lt, "b10"));
        assert!(compare("a", FilterOp::In, "b, a ,c"));
        assert!(compare("z", FilterOp::NotIn, "b, a ,c"));
        assert!(!compare("linux", FilterOp::Eq, "Linux"));
    }

    #[test]
    fn tables() {
        let f = facts();
        assert!(eval_filter(
            &filter("nodes", "os_name", FilterOp::Eq, "Linux"),
            &f
        ));
        assert!(eval_filter(
            &filter("nodes", "mem_bytes", FilterOp::Ge, "4096"),
            &f
        ));
        assert!(eval_filter(
            &filter("nodes", "missing", FilterOp::Eq, ""),
            &f
        ));
        assert!(eval_filter(
            &filter("packages", "pkg_name", FilterOp::Eq, "systemd"),
            &f
        ));
        assert!(!eval_filter(
            &filter("packages", "pkg_name", FilterOp::Ne, "systemd"),
            &f
        ));
        assert!(eval_filter(
            &filter("packages", "pkg_name", FilterOp::Ne, "xinetd"),
            &f
        ));
        assert!(eval_filter(
            &filter("packages", "pkg_name", FilterOp::NotLike, "xin%"),
            &f
        ));
        assert!(eval_filter(
            &filter("tags", "tag_name", FilterOp::In, "dev,prod"),
            &f
        ));
        assert!(!eval_filter(
            &filter("services", "svcname", FilterOp::Ne, "x"),
            &f
        ));
        assert!(!eval_filter(
            &filter("node_hba", "x", FilterOp::Ne, "x"),
            &f
        ));
    }

    #[test]
    fn left_to_right_and_nesting() {
        let t = || FilterTest::Filter(filter("nodes", "os_name", FilterOp::Eq, "Linux"));
        let f = || FilterTest::Filter(filter("nodes", "os_name", FilterOp::Eq, "SunOS"));
        let b = bundle(vec![
            ("empty", vec![]),
            // (false OR true) AND NOT false, then nested "not linux" = false
            (
                "mix",
                vec![
                    entry(LogicalOp::And, f()),
                    entry(LogicalOp::Or, t()),
                    entry(LogicalOp::AndNot, f()),
                ],
            ),
            ("first negated", vec![entry(LogicalOp::OrNot, t())]),
            (
                "nested",
                vec![
                    entry(LogicalOp::And, t()),
                    entry(
                        LogicalOp::AndNot,
                        FilterTest::Filterset("first negated".into()),
                    ),
                ],
            ),
            (
                "loop",
                vec![entry(LogicalOp::And, FilterTest::Filterset("loop".into()))],
            ),
        ]);
        let facts = facts();
        assert!(!matches(&b, "empty", &facts).unwrap_or(true));
        assert!(matches(&b, "mix", &facts).unwrap_or(false));
        assert!(!matches(&b, "first negated", &facts).unwrap_or(true));
        assert!(matches(&b, "nested", &facts).unwrap_or(false));
        assert!(matches(&b, "loop", &facts).is_err());
        assert!(matches!(
            matches(&b, "nope", &facts),
            Err(Error::NotFound { .. })
        ));
    }

    /// Issue 12 item 3: a chain far deeper than any limit (bundles built in code are not
    /// validated) evaluates on a small stack: the walk is iterative.
    #[test]
    fn a_deep_chain_evaluates_without_recursion() {
        const N: usize = 200_000;
        let linux = || FilterTest::Filter(filter("nodes", "os_name", FilterOp::Eq, "Linux"));
        let mut sets: Vec<(String, Vec<FilterEntry>)> = (0..N - 1)
            .map(|i| {
                let child = FilterTest::Filterset(format!("f{}", i + 1));
                (format!("f{i}"), vec![entry(LogicalOp::AndNot, child)])
            })
            .collect();
        sets.push((format!("f{}", N - 1), vec![entry(LogicalOp::And, linux())]));
        let b = bundle(sets.iter().map(|(n, e)| (n.as_str(), e.clone())).collect());
        let facts = facts();
        let out = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                let mut eval = Evaluator::new(&b, &facts);
                (eval.matches("f0").ok(), eval.evaluations())
            })
            .unwrap()
            .join()
            .unwrap();
        // f(N-1) is true; each level above negates: f0 = true iff N-1 is even.
        assert_eq!(out, (Some((N - 1).is_multiple_of(2)), N));
    }

    /// Issue 12 item 3: `f(i) = f(i+1) AND f(i+1)` over 40 levels was 2^40 evaluations; with
    /// the memo each filterset is evaluated once.
    #[test]
    fn a_diamond_evaluates_each_filterset_once() {
        const LEVELS: usize = 40;
        let linux = || FilterTest::Filter(filter("nodes", "os_name", FilterOp::Eq, "Linux"));
        let mut sets: Vec<(String, Vec<FilterEntry>)> = (0..LEVELS)
            .map(|i| {
                let child = || FilterTest::Filterset(format!("d{}", i + 1));
                (
                    format!("d{i}"),
                    vec![
                        entry(LogicalOp::And, child()),
                        entry(LogicalOp::And, child()),
                    ],
                )
            })
            .collect();
        sets.push((format!("d{LEVELS}"), vec![entry(LogicalOp::And, linux())]));
        let b = bundle(sets.iter().map(|(n, e)| (n.as_str(), e.clone())).collect());
        let facts = facts();
        let mut eval = Evaluator::new(&b, &facts);
        assert!(eval.matches("d0").unwrap_or(false));
        assert_eq!(eval.evaluations(), LEVELS + 1);
        // Already known: answered from the memo.
        assert!(eval.matches("d7").unwrap_or(false));
        assert_eq!(eval.evaluations(), LEVELS + 1);
        let mut other = facts.clone();
        other.node.insert("os_name".into(), "SunOS".into());
        let mut eval = Evaluator::new(&b, &other);
        assert!(!eval.matches("d0").unwrap_or(true));
        assert_eq!(eval.evaluations(), LEVELS + 1);
    }

    #[test]
    fn a_cycle_below_a_shared_filterset_is_named() {
        let b = bundle(vec![
            (
                "top",
                vec![
                    entry(LogicalOp::And, FilterTest::Filterset("a".into())),
                    entry(LogicalOp::And, FilterTest::Filterset("a".into())),
                ],
            ),
            (
                "a",
                vec![entry(LogicalOp::And, FilterTest::Filterset("b".into()))],
            ),
            (
                "b",
                vec![entry(LogicalOp::Or, FilterTest::Filterset("a".into()))],
            ),
        ]);
        let e = matches(&b, "top", &facts()).unwrap_err().to_string();
        assert_eq!(e, "filterset a: nesting cycle: a -> b -> a");
    }

    fn arb_op() -> impl Strategy<Value = FilterOp> {
        prop_oneof![
            Just(FilterOp::Eq),
            Just(FilterOp::Ne),
            Just(FilterOp::Like),
            Just(FilterOp::NotLike),
            Just(FilterOp::Lt),
            Just(FilterOp::Le),
            Just(FilterOp::Gt),
            Just(FilterOp::Ge),
            Just(FilterOp::In),
            Just(FilterOp::NotIn),
        ]
    }

    fn arb_logic() -> impl Strategy<Value = LogicalOp> {
        prop_oneof![
            Just(LogicalOp::And),
            Just(LogicalOp::Or),
            Just(LogicalOp::AndNot),
            Just(LogicalOp::OrNot),
        ]
    }

    fn arb_filter() -> impl Strategy<Value = Filter> {
        (
            prop_oneof![
                Just("nodes"),
                Just("packages"),
                Just("tags"),
                Just("services"),
                Just("other")
            ],
            prop_oneof![
                Just("os_name"),
                Just("pkg_name"),
                Just("tag_name"),
                Just("x")
            ],
            arb_op(),
            "[a-zA-Z0-9%_\\\\, .-]{0,8}",
        )
            .prop_map(|(t, f, op, v)| filter(t, f, op, &v))
    }

    fn arb_facts() -> impl Strategy<Value = NodeFacts> {
        (
            proptest::collection::vec(("[a-z_]{1,8}", "[a-zA-Z0-9%_ .-]{0,6}"), 0..4),
            proptest::collection::vec("[a-z0-9%_]{0,6}", 0..3),
            proptest::collection::vec("[a-z0-9]{0,4}", 0..3),
            proptest::option::of(proptest::collection::vec(
                ("[a-z_]{1,8}", "[a-z0-9]{0,6}"),
                0..3,
            )),
        )
            .prop_map(|(node, pkgs, tags, svc)| NodeFacts {
                node: node.into_iter().collect(),
                packages: pkgs
                    .into_iter()
                    .map(|name| PackageFact {
                        name,
                        ..Default::default()
                    })
                    .collect(),
                tags,
                service: svc.map(|s| s.into_iter().collect()),
            })
    }

    proptest! {
        #[test]
        fn random_filter_lists_never_panic(
            entries in proptest::collection::vec((arb_logic(), arb_filter()), 0..8),
            facts in arb_facts(),
        ) {
            let filters = entries.into_iter().map(|(l, f)| entry(l, FilterTest::Filter(f))).collect();
            let b = bundle(vec![("s", filters)]);
            prop_assert!(matches(&b, "s", &facts).is_ok());
        }

        #[test]
        fn ascii_like_agrees_with_the_general_one(
            text in "[a-cA-C%_\\\\]{0,8}",
            pat in "[a-cA-C%_\\\\]{0,8}",
        ) {
            prop_assert_eq!(
                like_ascii(text.as_bytes(), pat.as_bytes()),
                like_general(&text, &pat),
                "{:?} LIKE {:?}", text, pat
            );
        }

        #[test]
        fn excluded_middle(f in arb_filter(), facts in arb_facts()) {
            let a = || FilterTest::Filter(f.clone());
            let b = bundle(vec![
                ("contradiction", vec![entry(LogicalOp::And, a()), entry(LogicalOp::AndNot, a())]),
                ("tautology", vec![entry(LogicalOp::And, a()), entry(LogicalOp::OrNot, a())]),
                ("a", vec![entry(LogicalOp::And, a())]),
                ("nested contradiction", vec![
                    entry(LogicalOp::And, FilterTest::Filterset("a".into())),
                    entry(LogicalOp::AndNot, FilterTest::Filterset("a".into())),
                ]),
            ]);
            prop_assert!(!matches(&b, "contradiction", &facts).unwrap_or(true));
            prop_assert!(matches(&b, "tautology", &facts).unwrap_or(false));
            prop_assert!(!matches(&b, "nested contradiction", &facts).unwrap_or(true));
        }
    }
}
