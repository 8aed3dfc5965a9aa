//! Where a link inside an unpacked tree (an archive, an image) really points, decided before
//! anything is written: the walk the kernel would make, through the tree's own links.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

/// How deep links may chain while a target is resolved (Linux's limit).
pub const MAX_LINK_DEPTH: u32 = 40;

/// Why a link target does not stay inside its tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// The target itself is absolute.
    Absolute,
    /// The walk reached a link of the tree whose target is absolute.
    ThroughAbsoluteLink,
    /// `..` went above the tree's root.
    LeavesTree,
    /// More than [`MAX_LINK_DEPTH`] links chained.
    TooDeep,
}

/// Resolves `target` from the directory `from` (relative to the tree's root) as the kernel
/// would, following the tree's own `links` (a link's path relative to the root → its target);
/// the result is relative to the root. Fails when the walk would leave the tree, so a caller
/// can refuse a link (or a path through links) before it exists on disk.
pub fn resolve_in_tree(
    from: PathBuf,
    target: &Path,
    links: &HashMap<PathBuf, PathBuf>,
) -> Result<PathBuf, Escape> {
    walk(from, target, links, 0)
}

fn walk(
    mut cur: PathBuf,
    target: &Path,
    links: &HashMap<PathBuf, PathBuf>,
    depth: u32,
) -> Result<PathBuf, Escape> {
    for comp in target.components() {
        match comp {
            Component::RootDir | Component::Prefix(_) if depth == 0 => {
                return Err(Escape::Absolute);
            }
            Component::RootDir | Component::Prefix(_) => return Err(Escape::ThroughAbsoluteLink),
            Component::CurDir => {}
            Component::ParentDir => {
                if !cur.pop() {
                    return Err(Escape::LeavesTree);
                }
            }
            Component::Normal(name) => {
                cur.push(name);
                if let Some(next) = links.get(&cur) {
                    if depth >= MAX_LINK_DEPTH {
                        return Err(Escape::TooDeep);
                    }
                    cur.pop();
                    cur = walk(cur, next, links, depth + 1)?;
                }
            }
        }
    }
    Ok(cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(pairs: &[(&str, &str)]) -> HashMap<PathBuf, PathBuf> {
        pairs
            .iter()
            .map(|(l, t)| (PathBuf::from(l), PathBuf::from(t)))
            .collect()
    }

    #[test]
    fn a_target_inside_the_tree_resolves_through_its_links() {
        let l = links(&[("a/up", ".."), ("b", "a/c")]);
        assert_eq!(
            resolve_in_tree("a".into(), Path::new("up/b/x"), &l),
            Ok(PathBuf::from("a/c/x"))
        );
        assert_eq!(
            resolve_in_tree("a/b".into(), Path::new("../../d"), &l),
            Ok(PathBuf::from("d"))
        );
    }

    #[test]
    fn every_way_out_is_refused() {
        let none = links(&[]);
        let e = |from: &str, t: &str, l: &HashMap<PathBuf, PathBuf>| {
            resolve_in_tree(from.into(), Path::new(t), l).unwrap_err()
        };
        assert_eq!(e("a", "/etc/passwd", &none), Escape::Absolute);
        assert_eq!(e("a", "../../etc", &none), Escape::LeavesTree);
        // Lexically `a/up/../etc` is inside; through the link, `..` climbs above the root.
        let up = links(&[("a/up", "..")]);
        assert_eq!(e("a", "up/../etc", &up), Escape::LeavesTree);
        let abs = links(&[("a/etc", "/etc")]);
        assert_eq!(e("a", "etc/passwd", &abs), Escape::ThroughAbsoluteLink);
        let ring = links(&[("a/x", "y"), ("a/y", "x")]);
        assert_eq!(e("a", "x", &ring), Escape::TooDeep);
    }
}
