//! A node's policy, resolved with the same `tenet-rulesets` code the agent runs masterless, and
//! cached: a fetch resolves (evaluates filtersets, merges nested variables) only when something
//! it depends on changed. The cache key holds the policy generation (bumped by every edit of
//! the policy objects), the node's facts hash and attachment version, and the service's
//! attachment version; so an entry is never stale, and a fleet fetching an unchanged policy
//! costs one credentials lookup and one attachments-version read per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use axum::body::Bytes;
use tenet_rulesets::indexmap::IndexMap;
use tenet_rulesets::{Bundle, Policy, Selection};

use crate::error::{Error, Result};
use crate::store::{NodeAuth, Store, Target};

/// Entries kept before the cache is emptied (bounds memory; a fleet refills it in one round).
const MAX_ENTRIES: usize = 50_000;

/// A resolved policy, ready to send.
#[derive(Debug, Clone)]
pub struct Served {
    /// The policy's content hash.
    pub hash: String,
    /// Its JSON.
    pub json: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    generation: u64,
    node_id: String,
    facts_hash: String,
    node_attach_version: i64,
    service: Option<(String, i64)>,
    modulesets: Option<Vec<String>>,
}

/// Resolves and caches node policies.
pub struct Policies {
    store: Arc<dyn Store>,
    bundle: RwLock<Option<(u64, Arc<Bundle>)>>,
    cache: Mutex<HashMap<Key, Served>>,
}

impl Policies {
    /// A resolver over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Policies {
            store,
            bundle: RwLock::new(None),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The policy objects at the current generation (read from the store only when it moved).
    pub fn bundle(&self) -> Result<(u64, Arc<Bundle>)> {
        let current = self.store.generation()?;
        if let Some((g, b)) = self.bundle.read().expect("bundle lock").as_ref()
            && *g >= current
        {
            return Ok((*g, b.clone()));
        }
        let (g, b) = self.store.load_bundle()?;
        let b = Arc::new(b);
        let mut slot = self.bundle.write().expect("bundle lock");
        if slot.as_ref().is_none_or(|(old, _)| *old < g) {
            *slot = Some((g, b.clone()));
        }
        Ok((g, b))
    }

    /// The policy of `node` (or of `service` on it), restricted to `modulesets` when given
    /// (each must be attached, or a child of an attached one).
    pub fn resolve(
        &self,
        node: &NodeAuth,
        service: Option<&str>,
        modulesets: Option<Vec<String>>,
    ) -> Result<Served> {
        let (generation, bundle) = self.bundle()?;
        let service_attachments = match service {
            Some(s) => Some(self.store.attachments(&Target::Service(s.to_string()))?),
            None => None,
        };
        let key = Key {
            generation,
            node_id: node.id.clone(),
            facts_hash: node.facts_hash.clone(),
            node_attach_version: node.attach_version,
            service: service
                .zip(service_attachments.as_ref())
                .map(|(s, a)| (s.to_string(), a.version)),
            modulesets: modulesets.clone(),
        };
        if let Some(hit) = self.cache.lock().expect("policy cache").get(&key) {
            return Ok(hit.clone());
        }

        let attachments = match service_attachments {
            Some(a) => a,
            None => self.store.attachments(&Target::Node(node.id.clone()))?,
        };
        let target = match service {
            Some(s) => format!("service {s}"),
            None => format!("node {}", node.name),
        };
        let selected = match modulesets {
            None => attachments.modulesets.clone(),
            Some(asked) => {
                let reachable = descendants(&bundle, &attachments.modulesets);
                for m in &asked {
                    if !reachable.contains(m) {
                        let attached = if attachments.modulesets.is_empty() {
                            "none".to_string()
                        } else {
                            attachments.modulesets.join(", ")
                        };
                        return Err(Error::NotFound {
                            kind: "moduleset",
                            name: format!("{m} (not attached to {target}; attached: {attached})"),
                        });
                    }
                }
                asked
            }
        };
        let mut facts = self.store.node_facts(&node.id)?;
        if facts.node.is_empty() {
            facts.node.insert("nodename".into(), node.name.clone());
        }
        if let Some(s) = service {
            let mut svc = IndexMap::new();
            svc.insert("svcname".to_string(), s.to_string());
            facts.service = Some(svc);
        }
        let selection = Selection {
            modulesets: Some(selected),
            rulesets: attachments.rulesets.clone(),
            service: service.map(str::to_string),
        };
        let policy = Policy::resolve(&bundle, &facts, &selection)?;
        let json = serde_json::to_vec(&policy).map_err(|e| Error::Store(e.to_string()))?;
        let served = Served {
            hash: policy.hash.clone(),
            json: Bytes::from(json),
        };
        // Keep what was served under its hash, so a result's policy_hash can be looked up
        // later. The hash covers modulesets, modules, rulesets and service, not the facts: the
        // first policy served with a hash is kept.
        if let Ok(text) = std::str::from_utf8(&served.json) {
            self.store.save_policy_snapshot(&served.hash, text)?;
        }
        let mut cache = self.cache.lock().expect("policy cache");
        if cache.len() >= MAX_ENTRIES {
            cache.clear();
        }
        cache.insert(key, served.clone());
        Ok(served)
    }

    /// Entries currently cached (for tests and metrics).
    pub fn cached(&self) -> usize {
        self.cache.lock().expect("policy cache").len()
    }
}

/// The attached modulesets and all their descendants.
fn descendants(bundle: &Bundle, roots: &[String]) -> std::collections::HashSet<String> {
    let mut out = std::collections::HashSet::new();
    let mut stack: Vec<String> = roots.to_vec();
    while let Some(m) = stack.pop() {
        if out.insert(m.clone())
            && let Some(ms) = bundle.modulesets.get(&m)
        {
            stack.extend(ms.children.iter().cloned());
        }
    }
    out
}
