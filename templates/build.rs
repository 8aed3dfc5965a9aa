//! Embeds `library/` in the crate, so the `tenet` binary carries the shipped templates and
//! works wherever it is installed. Generates `$OUT_DIR/library.rs`: a sorted list of
//! `(relative path, contents)` for every `*.hbs` and `form.toml` file.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let name = e.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "hbs") || name == "form.toml" {
            out.push(p);
        }
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let lib = manifest.join("library");
    println!("cargo:rerun-if-changed={}", lib.display());
    let mut files = Vec::new();
    walk(&lib, &mut files);
    files.sort();
    let mut code =
        String::from("/// The shipped library: (path relative to `library/`, contents).\n");
    code.push_str("pub static FILES: &[(&str, &str)] = &[\n");
    for f in &files {
        // Directories are watched too, so adding a file re-runs this script.
        if let Some(parent) = f.parent() {
            println!("cargo:rerun-if-changed={}", parent.display());
        }
        println!("cargo:rerun-if-changed={}", f.display());
        let rel = f
            .strip_prefix(&lib)
            .expect("under library/")
            .to_string_lossy()
            .replace('\\', "/");
        let _ = writeln!(
            code,
            "    ({rel:?}, include_str!({:?})),",
            f.display().to_string()
        );
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("library.rs");
    std::fs::write(&out, code).expect("write library.rs");
}
