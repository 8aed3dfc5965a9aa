//! Table-driven schedule tests: every vector of OpenSVC's `tests/corelib/test_scheduler.py`
//! (b2.1) and every example of its schedule documentation (`usr/share/doc/schedule`), then wrap-around
//! ranges, exclusions, month days (first/last/negative), week and month modulo, intervals,
//! `next` and the `~` splay bounds.

use super::*;

fn dt(s: &str) -> DateTime {
    parse_datetime(s).unwrap_or_else(|| panic!("bad test date {s}"))
}

fn allowed(expr: &str, now: &str, last: Option<&str>) -> bool {
    matches!(
        Schedule::parse(expr).check(dt(now), last.map(dt), 0.5),
        Verdict::Allowed { .. }
    )
}

/// OpenSVC `SCHEDULES_ALLOWED`: allowed with a last run long ago and with none.
const PY_ALLOWED: &[(&str, &str)] = &[
    ("*", "2015-02-27 10:00"),
    ("*@61", "2015-02-27 10:00"),
    ("09:20-09:00", "2015-02-27 10:00"),
    ("09:00-09:20", "2015-02-27 09:09"),
    ("~09:00-09:20", "2015-02-27 09:09"),
    ("09:00-09:20@31", "2015-02-27 09:09"),
    ("* fri", "2015-10-09 10:00"),
    ("* *:fifth", "2015-01-05 10:00"),
    ("* *:fourth", "2015-01-04 10:00"),
    ("* *:third", "2015-01-03 10:00"),
    ("* *:second", "2015-01-02 10:00"),
    ("* *:first", "2015-01-01 10:00"),
    ("* *:1st", "2015-01-01 10:00"),
    ("* *:last", "2015-01-31 10:00"),
    ("* :fifth", "2015-01-05 10:00"),
    ("* :fourth", "2015-01-04 10:00"),
    ("* :third", "2015-01-03 10:00"),
    ("* :second", "2015-01-02 10:00"),
    ("* :first", "2015-01-01 10:00"),
    ("* :1st", "2015-01-01 10:00"),
    ("* :last", "2015-01-31 10:00"),
    ("* :5", "2015-01-05 10:00"),
    ("* :4", "2015-01-04 10:00"),
    ("* :3", "2015-01-03 10:00"),
    ("* :2", "2015-01-02 10:00"),
    ("* :1", "2015-01-01 10:00"),
    ("* :-1", "2015-01-31 10:00"),
    ("* :-2", "2015-01-30 10:00"),
    ("* :-3", "2015-01-29 10:00"),
    ("* :-4", "2015-01-28 10:00"),
    ("* *:5", "2015-01-05 10:00"),
    ("* *:4", "2015-01-04 10:00"),
    ("* *:3", "2015-01-03 10:00"),
    ("* *:2", "2015-01-02 10:00"),
    ("* *:1", "2015-01-01 10:00"),
    ("* *:-1", "2015-01-31 10:00"),
    ("* *:-2", "2015-01-30 10:00"),
    ("* *:-3", "2015-01-29 10:00"),
    ("* *:-4", "2015-01-28 10:00"),
    ("* * * jan", "2015-01-06 10:00"),
    ("* * * jan-feb", "2015-01-06 10:00"),
    ("* * * %2+1", "2015-01-06 10:00"),
    ("* * * jan-feb%2+1", "2015-01-06 10:00"),
    ("18:00-18:59@60 wed", "2016-08-31 18:00"),
    ("23:00-23:59@61 *:first", "2016-09-01 23:00"),
    ("23:00-23:59", "2016-09-01 23:00"),
    ("23:00-00:59", "2016-09-01 23:00"),
    ("@10", "2015-02-27 10:00"),
];

#[test]
fn py_allowed_vectors() {
    for (expr, now) in PY_ALLOWED {
        assert!(
            allowed(expr, now, Some("1902-04-01 23:10")),
            "{expr} at {now}, last 1902"
        );
        assert!(allowed(expr, now, None), "{expr} at {now}, never run");
    }
}

/// OpenSVC `SCHEDULES_NOT_ALLOWED`, validated with last = now as the Python test does.
const PY_NOT_ALLOWED: &[(&str, &str)] = &[
    ("", "2015-02-27 10:00"),
    ("@0", "2015-02-27 10:00"),
    ("*@0", "2015-02-27 10:00"),
    ("09:00-09:20", "2015-02-27 10:00"),
    ("09:00-09:20@31", "2015-02-27 10:00"),
    ("09:00-09:00", "2015-02-27 10:00"),
    ("09:00", "2015-02-27 10:00"),
    ("09:00-09:00", "2015-02-27 09:09"),
    ("09:00", "2015-02-27 09:09"),
    ("09:20-09:00", "2015-02-27 09:09"),
    ("* fri", "2015-10-08 10:00"),
    ("* *:-1", "2015-01-31 10:00"),
    ("* *:-2", "2015-01-24 10:00"),
    ("* *:-2", "2015-01-31 10:00"),
    ("* :last", "2015-01-30 10:00"),
    ("* :last", "2015-01-31 10:00"),
    ("* :-2", "2015-01-31 10:00"),
    ("* :-2", "2015-01-05 10:00"),
    ("* :5", "2015-01-06 10:00"),
    ("* :+5", "2015-01-06 10:00"),
    ("* :fifth", "2015-01-06 10:00"),
    ("* * * %2", "2015-01-06 10:00"),
    ("* * * jan-feb%2", "2015-01-06 10:00"),
    ("* :0", "2015-01-01 10:00"),
    ("* :0", "2015-01-02 10:00"),
    ("* :0", "2015-01-30 10:00"),
    ("* :0", "2015-01-31 10:00"),
    ("* *:0", "2015-01-01 10:00"),
    ("* *:0", "2015-01-02 10:00"),
    ("* *:0", "2015-01-30 10:00"),
    ("* *:0", "2015-01-31 10:00"),
];

#[test]
fn py_not_allowed_vectors() {
    for (expr, now) in PY_NOT_ALLOWED {
        assert!(
            !allowed(expr, now, Some(now)),
            "{expr} at {now}, last = now"
        );
    }
}

/// Not allowed on the calendar alone (no last run): the vectors of the reference and more.
const NOT_ALLOWED_NEVER_RUN: &[(&str, &str)] = &[
    ("", "2015-02-27 10:00"),
    ("@0", "2015-02-27 10:00"),
    ("*@0", "2015-02-27 10:00"),
    ("09:00-09:20", "2015-02-27 10:00"),
    ("09:00-09:20@31", "2015-02-27 10:00"),
    ("09:00", "2015-02-27 09:09"),
    ("09:20-09:00", "2015-02-27 09:09"),
    ("* fri", "2015-10-08 10:00"),
    ("* *:-2", "2015-01-24 10:00"),
    ("* :last", "2015-01-30 10:00"),
    ("* :-2", "2015-01-31 10:00"),
    ("* :-2", "2015-01-05 10:00"),
    ("* :5", "2015-01-06 10:00"),
    ("* :+5", "2015-01-06 10:00"),
    ("* :fifth", "2015-01-06 10:00"),
    ("* * * %2", "2015-01-06 10:00"),
    ("* * * jan-feb%2", "2015-01-06 10:00"),
    ("* :0", "2015-01-31 10:00"),
    ("* *:0", "2015-01-01 10:00"),
    // `*` is 00:00-23:59 (as OpenSVC's), so the last minute's seconds are out of it.
    ("*", "2015-02-27 23:59:30"),
    // a one-second range is begin..begin+1
    ("09:00", "2015-02-27 09:00:02"),
    ("null", "2015-02-27 10:00"),
    ("[]", "2015-02-27 10:00"),
];

#[test]
fn not_allowed_on_the_calendar() {
    for (expr, now) in NOT_ALLOWED_NEVER_RUN {
        assert!(!allowed(expr, now, None), "{expr} at {now}");
    }
}

#[test]
fn py_last_run_too_soon() {
    for (expr, now, last) in [
        ("@10", "2015-02-27 10:00", "2015-02-27 09:52"),
        ("@10s", "2015-02-27 10:00:15", "2015-02-27 10:00:08"),
    ] {
        let v = Schedule::parse(expr).check(dt(now), Some(dt(last)), 0.0);
        assert_eq!(
            v,
            Verdict::NotAllowed("last run is too soon".into()),
            "{expr}"
        );
    }
}

#[test]
fn py_intervals() {
    for (expr, secs) in [
        ("@3s", 3),
        ("*@6s", 6),
        ("*@06s", 6),
        ("*@18s", 18),
        ("10:00-18:00@10s", 10),
        // more units
        ("@10", 600),
        ("@1440", 86_400),
        ("@1h30m", 5400),
        ("@1H30M", 5400),
        ("@1w", 604_800),
        ("@2d", 172_800),
        ("@1h30", 3600), // digits after the last unit are ignored, as in OpenSVC
        ("09:00-10:00", 3601),
        ("23:00-01:00", 7201),
        ("09:00", 2),
        ("*", 86_400),
        ("~02:00-06:00", 14_401),
        ("10:00@", 0), // an empty interval is 0: never
    ] {
        let s = Schedule::parse_strict(expr).unwrap();
        assert_eq!(s.members[0].timeranges[0].interval, secs, "{expr}");
    }
}

#[test]
fn py_drops_invalid_members() {
    let good = "09:00-09:20@60 :1st 1 january";
    for bad in [
        "23:00-23:59@61 *:first:*",
        "23:00-23:59@61 *:",
        "23:00-23:59@61 *:*",
        "23:00-23:59@61 * * %2%3",
        "23:00-23:59@61 * * %2+1+2",
        "23:00-23:59@61 * * %foo",
        "23:00-23:59@61 * * %2+foo",
        "23:00-23:59@61 freday",
        "23:00-23:59@61 * * junuary",
        "23:00-23:59-01:00@61",
        "23:00-23:59:00@61 * * %2%3",
        "23:00-23:59@61@10",
        "23:00-23:02 mon 1 12 4",
        "21-22 mon 1 12",
        "14-15",
    ] {
        for list in [vec![bad, good], vec![good, bad]] {
            let s = Schedule::parse(&serde_json::to_string(&list).unwrap());
            assert_eq!(s.members.len(), 1, "{bad}");
            let m = &s.members[0];
            assert_eq!(m.raw, good);
            assert_eq!(
                m.timeranges,
                vec![TimeRange {
                    begin: 9 * 3600,
                    end: 9 * 3600 + 20 * 60,
                    interval: 3600,
                    probabilistic: false,
                    text: "09:00:00-09:20:00".into()
                }]
            );
            assert_eq!(
                m.days,
                (1..=7)
                    .map(|weekday| Day {
                        weekday,
                        monthday: Some(1)
                    })
                    .collect::<Vec<_>>()
            );
            assert_eq!(m.weeks, BTreeSet::from([1]));
            assert_eq!(m.months, BTreeSet::from([1]));
            assert_eq!(s.invalid.len(), 1, "{bad}");
        }
        let alone = Schedule::parse(bad);
        assert!(alone.members.is_empty(), "{bad}");
        assert!(Schedule::parse_strict(bad).is_err(), "{bad}");
    }
}

#[test]
fn invalid_expressions_name_the_bad_token() {
    for (expr, token) in [
        ("23:00-23:59@61 freday", "freday"),
        ("23:00-23:59@61 * * junuary", "junuary"),
        ("14-15", "14"),
        ("25:00-26:00", "25:00"),
        ("09:60", "09:60"),
        ("@h", "h"),
        ("* * * %0", "0"),
        ("* mon--fri", "mon--fri"),
        ("* mon:lastday", "lastday"),
        ("a b c d e", "e"),
        ("* * * %2+1+2", "2+1+2"),
        ("09:00@1@2", "09:00@1@2"),
        ("23:59:59", "23:59:59"),
        ("[1440]", "1440"),
    ] {
        let e = Schedule::parse_strict(expr).unwrap_err();
        assert_eq!(e.token, token, "{expr}: {e}");
        assert!(e.to_string().contains(token), "{e}");
    }
}

#[test]
fn py_calendar_expressions() {
    for (spec, want) in [
        ("mon", vec![1]),
        ("monday", vec![1]),
        ("sun", vec![7]),
        ("sunday", vec![7]),
        ("monday-sunday", vec![1, 2, 3, 4, 5, 6, 7]),
        ("monday-wed", vec![1, 2, 3]),
        ("sun-mon", vec![1, 7]),
        ("sun-tue", vec![1, 2, 7]),
        ("sun-wed", vec![1, 2, 3, 7]),
        ("mon-monday", vec![1]),
        ("tuesday-tue", vec![2]),
        ("sun-fri", vec![1, 2, 3, 4, 5, 7]),
        ("MON,Wed", vec![1, 3]),
        ("1-3,6", vec![1, 2, 3, 6]),
    ] {
        let got: Vec<i64> = calendar_expression(spec, 7)
            .unwrap()
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(got, want, "{spec}");
    }
    let months: Vec<i64> = calendar_expression("nov-feb", 12)
        .unwrap()
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(months, vec![1, 2, 11, 12]);
    assert_eq!(calendar_expression("*", 7).unwrap(), None);
    assert_eq!(calendar_expression("", 7).unwrap(), None);
}

/// (expression, now, last, allowed): the reference's examples, wrap-around, exclusions,
/// month days, weeks and month modulo.
const CASES: &[(&str, &str, Option<&str>, bool)] = &[
    // @1440: once per 24 h, any time
    ("@1440", "2015-02-27 10:00", Some("2015-02-26 10:01"), false),
    ("@1440", "2015-02-27 10:00", Some("2015-02-26 10:00"), true),
    ("@1440", "2015-02-27 23:59:59", None, true),
    // @10: every 10 minutes
    ("@10", "2015-02-27 10:00", Some("2015-02-27 09:50"), true),
    (
        "@10",
        "2015-02-27 10:00",
        Some("2015-02-27 09:50:01"),
        false,
    ),
    // 00:00-06:00@60 mon-fri: hourly, 00-06, weekdays (2015-02-27 is a Friday)
    ("00:00-06:00@60 mon-fri", "2015-02-27 03:00", None, true),
    ("00:00-06:00@60 mon-fri", "2015-02-28 03:00", None, false),
    ("00:00-06:00@60 mon-fri", "2015-02-27 07:00", None, false),
    (
        "00:00-06:00@60 mon-fri",
        "2015-02-27 03:00",
        Some("2015-02-27 02:30"),
        false,
    ),
    (
        "00:00-06:00@60 mon-fri",
        "2015-02-27 03:00",
        Some("2015-02-27 02:00"),
        true,
    ),
    // ~02:00-06:00: once a day in 02:00-06:00
    ("~02:00-06:00", "2015-02-27 03:00", None, true),
    ("~02:00-06:00", "2015-02-27 06:00:01", None, false),
    (
        "~02:00-06:00",
        "2015-02-27 03:00",
        Some("2015-02-27 02:30"),
        false,
    ),
    (
        "~02:00-06:00",
        "2015-02-27 05:30",
        Some("2015-02-27 01:00"),
        true,
    ),
    // 02:00-06:00@241 sun,wed (2015-03-01 is a Sunday)
    ("02:00-06:00@241 sun,wed", "2015-03-01 02:00", None, true),
    ("02:00-06:00@241 sun,wed", "2015-03-04 05:59", None, true),
    ("02:00-06:00@241 sun,wed", "2015-03-02 03:00", None, false),
    // 16:00-17:00@1m sat:last,tue-mon:last * %2+1,feb-apr: last day of odd months and
    // feb-apr, 16-17 h, every minute
    (
        "16:00-17:00@1m sat:last,tue-mon:last * %2+1,feb-apr",
        "2015-01-31 16:30",
        None,
        true,
    ),
    (
        "16:00-17:00@1m sat:last,tue-mon:last * %2+1,feb-apr",
        "2015-02-28 16:30",
        None,
        true,
    ),
    (
        "16:00-17:00@1m sat:last,tue-mon:last * %2+1,feb-apr",
        "2015-04-30 16:59",
        None,
        true,
    ),
    (
        "16:00-17:00@1m sat:last,tue-mon:last * %2+1,feb-apr",
        "2015-06-30 16:30",
        None,
        false,
    ),
    (
        "16:00-17:00@1m sat:last,tue-mon:last * %2+1,feb-apr",
        "2015-01-30 16:30",
        None,
        false,
    ),
    (
        "16:00-17:00@1m sat:last,tue-mon:last * %2+1,feb-apr",
        "2015-01-31 17:01",
        None,
        false,
    ),
    // ["06:00-07:00@1h *:1,-1", "! * * * feb"]: the 1st, never in February ("-1" after a
    // comma is a weekday of its own, out of 1..7: it selects nothing, as in OpenSVC)
    (
        r#"["06:00-07:00@1h *:1,-1", "! * * * feb"]"#,
        "2015-03-01 06:30",
        None,
        true,
    ),
    (
        r#"["06:00-07:00@1h *:1,-1", "! * * * feb"]"#,
        "2015-02-01 06:30",
        None,
        false,
    ),
    (
        r#"["06:00-07:00@1h *:1,-1", "! * * * feb"]"#,
        "2015-03-31 06:30",
        None,
        false,
    ),
    (
        r#"["06:00-07:00@1h *:1,-1", "! * * * feb"]"#,
        "2015-03-01 07:30",
        None,
        false,
    ),
    // * * * %2: even months
    ("* * * %2", "2015-02-10 10:00", None, true),
    ("* * * %2", "2015-12-10 10:00", None, true),
    ("* * * %2", "2015-11-10 10:00", None, false),
    // ["14:00-21:00@10", "!12:00-18:55"]: exclusions win whatever the order
    (
        r#"["14:00-21:00@10", "!12:00-18:55"]"#,
        "2015-02-27 15:00",
        None,
        false,
    ),
    (
        r#"["!12:00-18:55", "14:00-21:00@10"]"#,
        "2015-02-27 15:00",
        None,
        false,
    ),
    (
        r#"["14:00-21:00@10", "!12:00-18:55"]"#,
        "2015-02-27 18:55",
        None,
        false,
    ),
    (
        r#"["14:00-21:00@10", "!12:00-18:55"]"#,
        "2015-02-27 18:56",
        None,
        true,
    ),
    (
        r#"["14:00-21:00@10", "!12:00-18:55"]"#,
        "2015-02-27 21:01",
        None,
        false,
    ),
    // wrap-around time ranges
    ("22:00-02:00", "2015-02-27 23:30", None, true),
    ("22:00-02:00", "2015-02-27 01:00", None, true),
    ("22:00-02:00", "2015-02-27 02:00:01", None, false),
    ("22:00-02:00", "2015-02-27 21:59:59", None, false),
    ("22:00-02:00 fri", "2015-02-28 01:00", None, false), // the day is checked on the date
    (
        "22:00-02:00@30",
        "2015-02-28 00:10",
        Some("2015-02-27 23:50"),
        false,
    ),
    (
        "22:00-02:00@30",
        "2015-02-28 00:20",
        Some("2015-02-27 23:50"),
        true,
    ),
    // several ranges in one member
    ("01:00-02:00,13:00-14:00", "2015-02-27 13:30", None, true),
    ("01:00-02:00,13:00-14:00", "2015-02-27 12:30", None, false),
    ("01:00-02:00@0,13:00-14:00", "2015-02-27 01:30", None, false),
    // wrap-around days and months
    ("* sat-mon", "2015-02-28 10:00", None, true), // saturday
    ("* sat-mon", "2015-03-02 10:00", None, true), // monday
    ("* sat-mon", "2015-03-03 10:00", None, false), // tuesday
    ("* * * nov-feb", "2015-12-15 10:00", None, true),
    ("* * * nov-feb", "2015-01-15 10:00", None, true),
    ("* * * nov-feb", "2015-03-15 10:00", None, false),
    ("* * * november-february", "2015-11-01 10:00", None, true),
    // month days: weekday AND day of month must match
    ("* sun:1", "2015-03-01 10:00", None, true),
    ("* sun:1", "2015-04-01 10:00", None, false),
    ("* sat:last", "2015-01-31 10:00", None, true),
    ("* sat:last", "2015-02-28 10:00", None, true),
    ("* sat:last", "2015-03-31 10:00", None, false),
    ("* fri:-1", "2015-07-31 10:00", None, true),
    ("* :-31", "2015-01-01 10:00", None, true),
    ("* :-31", "2015-02-01 10:00", None, false), // longer than February: never there
    ("* :31", "2015-02-28 10:00", None, false),
    ("* :29", "2016-02-29 10:00", None, true),
    ("* :-1", "2016-02-29 10:00", None, true),
    ("* :-1", "2016-02-28 10:00", None, false),
    ("* mon:2nd,fri:3rd", "2015-01-02 10:00", None, false),
    ("* fri:2nd", "2015-01-02 10:00", None, true),
    ("* :+2", "2015-01-02 10:00", None, true),
    // ISO weeks (2015-01-01 is in week 1; 2015-12-31 in week 53)
    ("* * 1", "2015-01-01 10:00", None, true),
    ("* * 1", "2015-01-05 10:00", None, false),
    ("* * 2-3", "2015-01-05 10:00", None, true),
    ("* * 53", "2015-12-31 10:00", None, true),
    ("* * 52-2", "2015-12-31 10:00", None, true), // wraps the year
    ("* * 52-2", "2015-06-01 10:00", None, false),
    ("* * 0", "2015-01-01 10:00", None, false),
    // month modulo with shift, and names
    ("* * * %3", "2015-03-10 10:00", None, true),
    ("* * * %3", "2015-04-10 10:00", None, false),
    ("* * * %3+1", "2015-02-10 10:00", None, true),
    ("* * * %3+2", "2015-01-10 10:00", None, true),
    ("* * * jun-dec%2", "2015-02-10 10:00", None, false),
    ("* * * jun-dec%2", "2015-08-10 10:00", None, true),
    ("* * * *%6", "2015-06-10 10:00", None, true),
    ("* * * jan,jul", "2015-07-10 10:00", None, true),
    // seconds in time ranges, and one-second ranges
    ("09:00:30-09:00:40", "2015-02-27 09:00:35", None, true),
    ("09:00:30-09:00:40", "2015-02-27 09:00:41", None, false),
    ("09:00", "2015-02-27 09:00:01", None, true),
    ("9:5", "2015-02-27 09:05", None, true),
    // exclusion of a weekday only
    (r#"["@10", "! * sat,sun"]"#, "2015-02-28 10:00", None, false),
    (r#"["@10", "! * sat,sun"]"#, "2015-02-27 10:00", None, true),
    // an exclusion's interval does not matter
    (
        r#"["@10", "!10:00-11:00@0"]"#,
        "2015-02-27 10:30",
        None,
        false,
    ),
    // only exclusions: never
    (r#"["! 10:00-11:00"]"#, "2015-02-27 12:00", None, false),
    // a JSON string
    (r#""@10""#, "2015-02-27 10:00", None, true),
    // an invalid member is dropped, the others apply
    (r#"["14-15", "@10"]"#, "2015-02-27 10:00", None, true),
];

#[test]
fn calendar_and_interval_cases() {
    for (expr, now, last, want) in CASES {
        assert_eq!(
            allowed(expr, now, *last),
            *want,
            "{expr} at {now} last {last:?}"
        );
    }
}

/// (expression, now, last, next)
const NEXT: &[(&str, &str, Option<&str>, Option<&str>)] = &[
    (
        "@10",
        "2015-02-27 10:00",
        Some("2015-02-27 09:52"),
        Some("2015-02-27 10:02:00"),
    ),
    ("@10", "2015-02-27 10:00", None, Some("2015-02-27 10:00:00")),
    (
        "00:00-06:00@60 mon-fri",
        "2015-02-28 10:00",
        None,
        Some("2015-03-02 00:00:00"),
    ),
    (
        "00:00-06:00@60 mon-fri",
        "2015-02-27 03:10",
        Some("2015-02-27 02:30"),
        Some("2015-02-27 03:30:00"),
    ),
    (
        "* * * feb",
        "2015-03-01 10:00",
        None,
        Some("2016-02-01 00:00:00"),
    ),
    (
        r#"["14:00-21:00@10", "!12:00-18:55"]"#,
        "2015-02-27 15:00",
        None,
        Some("2015-02-27 18:55:01"),
    ),
    (
        "09:00-09:20@31",
        "2015-02-27 10:00",
        None,
        Some("2015-02-28 09:00:00"),
    ),
    (
        "09:00-09:20",
        "2015-02-27 09:10",
        Some("2015-02-27 09:05"),
        Some("2015-02-28 09:00:00"),
    ),
    ("@0", "2015-02-27 10:00", None, None),
    ("", "2015-02-27 10:00", None, None),
    ("*@0", "2015-02-27 10:00", None, None),
    ("* sat:29 * feb", "2015-01-01 10:00", None, None), // 2020 is after next year
    (
        "* :29 * feb",
        "2015-01-01 10:00",
        None,
        Some("2016-02-29 00:00:00"),
    ),
    (
        "* sat:last",
        "2015-02-01 10:00",
        None,
        Some("2015-02-28 00:00:00"),
    ),
    (
        "22:00-02:00 mon",
        "2015-03-03 01:00",
        None,
        Some("2015-03-09 00:00:00"),
    ),
    (
        "22:00-02:00",
        "2015-03-03 03:00",
        None,
        Some("2015-03-03 22:00:00"),
    ),
    (
        r#"["06:00-07:00@1h *:1", "! * * * feb"]"#,
        "2015-01-02 00:00",
        None,
        Some("2015-03-01 06:00:00"),
    ),
    (
        "@1440",
        "2015-02-27 10:00",
        Some("2015-02-27 08:00"),
        Some("2015-02-28 08:00:00"),
    ),
    (
        "* * * %2",
        "2015-03-15 10:00",
        None,
        Some("2015-04-01 00:00:00"),
    ),
    (
        "* * 10",
        "2015-01-01 10:00",
        None,
        Some("2015-03-02 00:00:00"),
    ),
    // `*` is 00:00-23:59, as in OpenSVC: the exclusion leaves 23:59:01-23:59:59 open
    (
        r#"["@10", "! * sat,sun"]"#,
        "2015-02-28 10:00",
        None,
        Some("2015-02-28 23:59:01"),
    ),
    (
        r#"["@10", "!00:00-23:59:59 sat,sun"]"#,
        "2015-02-28 10:00",
        None,
        Some("2015-03-02 00:00:00"),
    ),
];

#[test]
fn next_runs() {
    for (expr, now, last, want) in NEXT {
        let got = Schedule::parse(expr)
            .next(dt(now), last.map(dt), 0.0)
            .map(format_datetime);
        assert_eq!(got.as_deref(), *want, "{expr} at {now} last {last:?}");
    }
}

#[test]
fn next_is_allowed_and_nothing_before_it_is() {
    // Brute force over a day, second by second, for a few expressions with splay 0.
    for expr in [
        "00:00-06:00@60 mon-fri",
        r#"["14:00-21:00@10", "!12:00-18:55"]"#,
        "22:00-02:00@30",
        "09:00-09:20@5,13:00@1",
    ] {
        let s = Schedule::parse(expr);
        let now = dt("2015-02-27 00:00:00");
        let last = Some(dt("2015-02-26 23:55:00"));
        let next = s.next(now, last, 0.0).unwrap();
        assert!(
            matches!(s.check(next, last, 0.0), Verdict::Allowed { .. }),
            "{expr}: {next}"
        );
        let (a, b) = (civil_secs(now), civil_secs(next));
        for t in a..b {
            assert!(
                !matches!(
                    s.check(from_civil_secs(t), last, 0.0),
                    Verdict::Allowed { .. }
                ),
                "{expr}: allowed at {} before next {next}",
                from_civil_secs(t)
            );
        }
    }
}

#[test]
fn splay_stays_in_bounds() {
    let s = Schedule::parse("~02:00-06:00");
    let tr = &s.members[0].timeranges[0];
    assert!(tr.probabilistic);
    // at the start of the range: remaining = 06:00 - 02:00 - 1 s
    let remaining = 4 * 3600 - 1;
    assert_eq!(tr.splay(2 * 3600, 0.0), 0);
    assert_eq!(tr.splay(2 * 3600, 0.5), remaining / 2);
    assert!(tr.splay(2 * 3600, 0.999_999_999) < remaining);
    // later in the range the splay shrinks with what remains
    assert!(tr.splay(5 * 3600, 0.999_999_999) < 3600 - 1);
    // nothing remains at the end
    assert_eq!(tr.splay(6 * 3600, 0.9), 0);
    assert_eq!(tr.splay(6 * 3600 - 1, 0.9), 0);
    // next() lands in the range, at the node's offset
    for f in [0.0, 0.1, 0.5, 0.99] {
        let n = s.next(dt("2015-02-27 01:00"), None, f).unwrap();
        let secs = day_seconds(n);
        assert!((2 * 3600..6 * 3600).contains(&secs), "{f}: {n}");
        assert_eq!(secs, 2 * 3600 + (remaining as f64 * f) as i64, "{f}");
        // and it is allowed there
        assert!(matches!(s.check(n, None, f), Verdict::Allowed { .. }));
    }
    // the wrap-around range 23:00-01:00: remaining counts past midnight
    let w = Schedule::parse("~23:00-01:00");
    let tr = &w.members[0].timeranges[0];
    assert_eq!(tr.splay(23 * 3600, 0.5), (2 * 3600 - 1) / 2);
    assert_eq!(tr.splay(1800, 0.5), (1800 - 1) / 2);
}

#[test]
fn splay_applies_only_to_long_ranges_run_once() {
    for (expr, probabilistic) in [
        ("~02:00-06:00", true),
        ("~*", true),
        ("~02:00-06:00@4h1s", true),
        ("~02:00-06:00@10", false), // several runs per range: no splay
        ("~09:00", false),          // one-second range
        ("~09:00-09:00:01", false), // two seconds
        ("~@10", false),
        ("02:00-06:00", false),
    ] {
        let s = Schedule::parse_strict(expr).unwrap();
        assert_eq!(
            s.members[0].timeranges[0].probabilistic, probabilistic,
            "{expr}"
        );
    }
}

#[test]
fn splay_fraction_is_stable_and_spread() {
    assert_eq!(splay_fraction("node-a"), splay_fraction("node-a"));
    assert_ne!(splay_fraction("node-a"), splay_fraction("node-b"));
    let fs: Vec<f64> = (0..1000)
        .map(|i| splay_fraction(&format!("5b0c-{i}")))
        .collect();
    assert!(fs.iter().all(|f| (0.0..1.0).contains(f)));
    let low = fs.iter().filter(|f| **f < 0.5).count();
    assert!((400..600).contains(&low), "{low} of 1000 below 0.5");
}

#[test]
fn explain_says_why() {
    let s = Schedule::parse(r#"["14:00-21:00@10", "!12:00-18:55"]"#);
    let e = s.explain(dt("2015-02-27 15:00"), None, 0.0);
    assert!(!e.allowed);
    assert!(
        e.reason.contains("excluded") && e.reason.contains("2015-02-27 18:55:00"),
        "{}",
        e.reason
    );
    assert_eq!(e.next.as_deref(), Some("2015-02-27 18:55:01"));
    let e =
        Schedule::parse("@10").explain(dt("2015-02-27 10:00"), Some(dt("2015-02-27 09:52")), 0.0);
    assert_eq!(e.reason, "last run is too soon");
    let e = Schedule::parse("09:00-09:20 mon").explain(dt("2015-02-27 10:00"), None, 0.0);
    assert_eq!(e.reason, "not in allowed days");
    let e = Schedule::parse("@0").explain(dt("2015-02-27 10:00"), None, 0.0);
    assert!(!e.allowed && e.next.is_none());
    let e = Schedule::parse("~02:00-06:00").explain(dt("2015-02-27 02:00"), None, 0.5);
    assert!(e.allowed && e.reason.contains("splay"), "{}", e.reason);
    assert_eq!(e.next.as_deref(), Some("2015-02-27 03:59:59"));
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(
        json.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["allowed", "reason", "next"]
    );
}

#[test]
fn civil_seconds_round_trip() {
    for s in [
        "1970-01-01 00:00:00",
        "1902-04-01 23:10:00",
        "2000-02-29 12:34:56",
        "2015-12-31 23:59:59",
        "2100-03-01 00:00:00",
    ] {
        assert_eq!(format_datetime(from_civil_secs(civil_secs(dt(s)))), s);
    }
    assert_eq!(
        civil_secs(dt("2015-03-01 00:00")) - civil_secs(dt("2015-02-28 00:00")),
        DAY
    );
}

#[test]
fn python_int_parsing() {
    for (s, want) in [
        ("5", Some(5)),
        ("+5", Some(5)),
        ("-2", Some(-2)),
        ("05", Some(5)),
        ("1_0", Some(10)),
        ("", None),
        ("-", None),
        ("1__0", None),
        ("_1", None),
        ("x", None),
    ] {
        assert_eq!(py_int(s), want, "{s:?}");
    }
}

#[test]
fn there_are_at_least_a_hundred_cases() {
    let n = PY_ALLOWED.len() * 2
        + PY_NOT_ALLOWED.len()
        + NOT_ALLOWED_NEVER_RUN.len()
        + CASES.len()
        + NEXT.len();
    assert!(n >= 100, "{n}");
}
