//! The version orders of dpkg and rpm, used to pick the highest version among package files.

use std::cmp::Ordering;

/// Compares two Debian versions (`[epoch:]upstream[-revision]`) the way dpkg does.
pub fn compare_deb_versions(a: &str, b: &str) -> Ordering {
    fn split(v: &str) -> (u64, &str, &str) {
        let (epoch, rest) = match v.split_once(':') {
            Some((e, r)) if e.chars().all(|c| c.is_ascii_digit()) && !e.is_empty() => {
                (e.parse().unwrap_or(u64::MAX), r)
            }
            _ => (0, v),
        };
        match rest.rsplit_once('-') {
            Some((up, rev)) => (epoch, up, rev),
            None => (epoch, rest, ""),
        }
    }
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| deb_verrevcmp(ua, ub))
        .then_with(|| deb_verrevcmp(ra, rb))
}

/// Compares two rpm `version-release` strings the way rpm does (rpmvercmp on each part).
pub fn compare_rpm_versions(a: &str, b: &str) -> Ordering {
    let split = |v: &'_ str| -> (String, String) {
        match v.rsplit_once('-') {
            Some((ver, rel)) => (ver.to_string(), rel.to_string()),
            None => (v.to_string(), String::new()),
        }
    };
    let (va, ra) = split(a);
    let (vb, rb) = split(b);
    rpmvercmp(&va, &vb).then_with(|| rpmvercmp(&ra, &rb))
}

fn deb_order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(b'~') => -1,
        Some(c) => c as i32 + 256,
    }
}

/// dpkg's `verrevcmp`.
fn deb_verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let digit = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
    while i < a.len() || j < b.len() {
        let mut first_diff = 0i32;
        while (i < a.len() && !digit(a, i)) || (j < b.len() && !digit(b, j)) {
            let (ac, bc) = (deb_order(a.get(i).copied()), deb_order(b.get(j).copied()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        while digit(a, i) && digit(b, j) {
            if first_diff == 0 {
                first_diff = a[i] as i32 - b[j] as i32;
            }
            i += 1;
            j += 1;
        }
        if digit(a, i) {
            return Ordering::Greater;
        }
        if digit(b, j) {
            return Ordering::Less;
        }
        if first_diff != 0 {
            return first_diff.cmp(&0);
        }
    }
    Ordering::Equal
}

/// rpm's `rpmvercmp` (with `~` sorting before anything and `^` after the end only).
fn rpmvercmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let sep = |c: u8| !c.is_ascii_alphanumeric() && c != b'~' && c != b'^';
    loop {
        while i < a.len() && sep(a[i]) {
            i += 1;
        }
        while j < b.len() && sep(b[j]) {
            j += 1;
        }
        let (ca, cb) = (a.get(i).copied(), b.get(j).copied());
        if ca == Some(b'~') || cb == Some(b'~') {
            if ca != Some(b'~') {
                return Ordering::Greater;
            }
            if cb != Some(b'~') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        if ca == Some(b'^') || cb == Some(b'^') {
            if ca.is_none() {
                return Ordering::Less;
            }
            if cb.is_none() {
                return Ordering::Greater;
            }
            if ca != Some(b'^') {
                return Ordering::Greater;
            }
            if cb != Some(b'^') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        let (Some(ca), Some(_)) = (ca, cb) else { break };
        let numeric = ca.is_ascii_digit();
        let class = |c: &u8| {
            if numeric {
                c.is_ascii_digit()
            } else {
                c.is_ascii_alphabetic()
            }
        };
        let ea = i + a[i..].iter().take_while(|c| class(c)).count();
        let eb = j + b[j..].iter().take_while(|c| class(c)).count();
        if eb == j {
            // Different kinds of segment: a number is newer than letters.
            return if numeric {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        let (mut sa, mut sb) = (&a[i..ea], &b[j..eb]);
        if numeric {
            while sa.first() == Some(&b'0') {
                sa = &sa[1..];
            }
            while sb.first() == Some(&b'0') {
                sb = &sb[1..];
            }
            match sa.len().cmp(&sb.len()) {
                Ordering::Equal => {}
                other => return other,
            }
        }
        match sa.cmp(sb) {
            Ordering::Equal => {}
            other => return other,
        }
        i = ea;
        j = eb;
    }
    match (i >= a.len(), j >= b.len()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        _ => Ordering::Greater,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb_version_order() {
        use Ordering::*;
        for (a, b, want) in [
            ("1.0", "1.0", Equal),
            ("1.10", "1.9", Greater),
            ("1.0~rc1", "1.0", Less),
            ("1.0", "1.0-1", Less),
            ("1:0.1", "9.9", Greater),
            ("1.0a", "1.0", Greater),
            ("1.0+b1", "1.0a", Greater),
            ("2.0-1ubuntu1", "2.0-1", Greater),
            ("1.001", "1.1", Equal),
            ("1.0~~", "1.0~", Less),
        ] {
            assert_eq!(compare_deb_versions(a, b), want, "{a} vs {b}");
            assert_eq!(compare_deb_versions(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn rpm_version_order() {
        use Ordering::*;
        for (a, b, want) in [
            ("1.0-1", "1.0-1", Equal),
            ("1.10-1", "1.9-1", Greater),
            ("1.0~rc1-1", "1.0-1", Less),
            ("1.0-2.el9", "1.0-10.el9", Less),
            ("1.0a-1", "1.0-1", Greater),
            ("1.0^git1-1", "1.0-1", Greater),
            ("1.0^git1-1", "1.0.1-1", Less),
            ("1.01-1", "1.1-1", Equal),
            ("2-1", "a-1", Greater),
        ] {
            assert_eq!(compare_rpm_versions(a, b), want, "{a} vs {b}");
            assert_eq!(compare_rpm_versions(b, a), want.reverse(), "{b} vs {a}");
        }
    }
}
