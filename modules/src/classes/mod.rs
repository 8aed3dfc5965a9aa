//! The built-in object classes, one file each. Adding a class: write `<class>.rs` (rule type,
//! check, fixable, fix and tests calling [`crate::testing::assert_class_contract`]) and add one
//! line to the `classes!` list below.

use crate::class::ClassEntry;

macro_rules! classes {
    ($($module:ident :: $ty:ident),* $(,)?) => {
        $(pub mod $module;)*
        /// Every built-in class.
        pub static CLASSES: &[ClassEntry] = &[$(ClassEntry::of::<$module::$ty>()),*];
    };
}

#[cfg(test)]
mod root_containment;

classes! {
    sysctl::Sysctl,
    sysfs::Sysfs,
    nodeconf::NodeConf,
    file::File,
    fileprop::FileProp,
    remove_files::RemoveFiles,
    symlink::Symlink,
    package::Package,
    bridge::Bridge,
    dnsmasq::Dnsmasq,
    systemd_unit::SystemdUnit,
    mount::Mount,
    k8s_replicas::K8sReplicas,
    release::Release,
}

/// Finds a class by name or alias.
pub fn find(name: &str) -> Option<&'static ClassEntry> {
    CLASSES.iter().find(|c| c.answers_to(name))
}
