//! Node facts gathered locally (masterless mode): the `nodes` table fields OpenSVC's asset
//! push sends, with its spellings (`os_vendor` = `Debian`, `Red Hat`, ...), and the installed
//! packages. Filtersets are evaluated against these.

use tenet_modules::Host;
use tenet_rulesets::NodeFacts;
use tenet_rulesets::indexmap::IndexMap;

/// The node's name: `TENET_NODENAME` when set (OpenSVC's agents honour a nodename override
/// too), else the host name of the system under `host`'s root prefix.
pub fn nodename(host: &Host) -> String {
    std::env::var("TENET_NODENAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| host.hostname().to_string())
}

/// Gathers facts for the system under `host`'s root prefix.
pub fn gather(host: &Host) -> NodeFacts {
    let mut node: IndexMap<String, String> = IndexMap::new();
    let nodename = nodename(host);
    let short = nodename.split('.').next().unwrap_or(&nodename).to_string();
    node.insert("nodename".into(), short);
    node.insert("fqdn".into(), nodename);
    node.insert(
        "os_name".into(),
        std::env::consts::OS.replace("linux", "Linux"),
    );
    let os_release = read_os_release(host, "/etc/os-release")
        .or_else(|| read_os_release(host, "/usr/lib/os-release"));
    if let Some(rel) = &os_release {
        let get = |k: &str| rel.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.clone());
        let id = get("ID").unwrap_or_default();
        node.insert("os_vendor".into(), vendor_of(&id, get("NAME").as_deref()));
        if let Some(v) = get("VERSION_ID") {
            node.insert("os_release".into(), v);
        }
    }
    node.insert("os_arch".into(), std::env::consts::ARCH.to_string());
    if let Ok(mut sys) = sysinfo::System::new() {
        sys.refresh_cpu_all();
        sys.refresh_memory();
        if let Some(cpu) = sys.cpus().first() {
            node.insert("cpu_model".into(), cpu.brand().trim().to_string());
        }
        node.insert("cpu_threads".into(), sys.cpus().len().to_string());
        node.insert("mem_bytes".into(), sys.total_memory().to_string());
    }
    // Site facts an operator sets by hand (team_responsible, environment, ...).
    if let Ok(Some(text)) = host.read_to_string(&host.node_config_file())
        && let Ok(table) = text.parse::<toml::Table>()
        && let Some(toml::Value::Table(f)) = table.get("facts")
    {
        for (k, v) in f {
            let v = match v {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            node.insert(k.clone(), v);
        }
    }
    let packages = tenet_modules::packages::installed_packages(host.view()).unwrap_or_else(|e| {
        tracing::warn!("cannot list installed packages: {e}");
        Vec::new()
    });
    NodeFacts {
        node,
        packages,
        tags: Vec::new(),
        service: None,
    }
}

/// `os-release` of the managed system (read inside the root prefix, like every file of it).
fn read_os_release(host: &Host, abs: &str) -> Option<Vec<(String, String)>> {
    let text = host.read_to_string(&host.path(abs).ok()?).ok()??;
    Some(
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
            .collect(),
    )
}

/// OpenSVC's `os_vendor` spelling for an os-release ID.
fn vendor_of(id: &str, name: Option<&str>) -> String {
    match id {
        "debian" => "Debian",
        "ubuntu" => "Ubuntu",
        "rhel" => "Red Hat",
        "centos" => "CentOS",
        "ol" => "Oracle",
        "fedora" => "Fedora",
        "rocky" => "Rocky",
        "almalinux" => "AlmaLinux",
        "sles" | "opensuse-leap" | "opensuse-tumbleweed" => "SuSE",
        "alpine" => "Alpine",
        _ => return name.unwrap_or(id).to_string(),
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_under_the_root() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/os-release"),
            "ID=rhel\nVERSION_ID=\"9.4\"\nNAME=\"Red Hat Enterprise Linux\"\n",
        )
        .unwrap();
        let f = gather(&Host::new(d.path()));
        assert_eq!(f.node["os_vendor"], "Red Hat");
        assert_eq!(f.node["os_release"], "9.4");
        assert_eq!(f.node["os_name"], "Linux");
        assert!(f.node["mem_bytes"].parse::<u64>().unwrap() > 0);
    }
}
