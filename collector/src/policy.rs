//! A node's policy, resolved with the same `tenet-rulesets` code the agent runs masterless, and
//! cached: a fetch resolves (evaluates filtersets, merges nested variables) only when something
//! it depends on changed.
//!
//! The cache has two levels. Each node has a few *requests* (a selection: its attachments, a
//! service, a `?moduleset=` list, deduplicated and sorted) keyed by what the node's row says
//! (policy generation, facts hash, attachment versions), so a fleet fetching an unchanged
//! policy costs one credentials lookup and one generation read per request. Each request points
//! to a *content* entry keyed by the inputs of the resolution themselves (generation, facts,
//! selected modulesets and rulesets, service), held once behind an `Arc` and shared by every
//! node with equal inputs. Memory is bounded in bytes ([`DEFAULT_CACHE_BYTES`], `serve
//! --policy-cache-size`): past the budget, the nodes used least recently lose their entries
//! (a clock: a node used since it was last considered gets a second chance). One node holds
//! at most [`MAX_PER_NODE`] requests and an eighth of the budget; a new facts hash, generation
//! or attachment version replaces the node's entries rather than adding to them, so a node
//! changing a fact on every request churns its own entry, not the cache.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use axum::body::Bytes;
use sha2::{Digest, Sha256};
use tenet_rulesets::indexmap::IndexMap;
use tenet_rulesets::{Bundle, Policy, Selection};

use crate::error::{Error, Result};
use crate::store::{NodeAuth, Store, Target};

/// Bytes the cache may hold when `serve --policy-cache-size` is not given.
pub const DEFAULT_CACHE_BYTES: usize = 256 * 1024 * 1024;
/// Requests (selections) cached per node.
pub const MAX_PER_NODE: usize = 16;
/// Bookkeeping counted per request entry on top of its key's strings.
const ENTRY_OVERHEAD: usize = 128;

/// A resolved policy, ready to send.
#[derive(Debug, Clone)]
pub struct Served {
    /// The policy's content hash.
    pub hash: String,
    /// Its JSON.
    pub json: Bytes,
}

/// What a node's row says about a request: equal keys, equal policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RequestKey {
    generation: u64,
    facts_hash: String,
    node_attach_version: i64,
    service: Option<(String, i64)>,
    modulesets: Option<Vec<String>>,
}

impl RequestKey {
    fn size(&self) -> usize {
        ENTRY_OVERHEAD
            + self.facts_hash.len()
            + self.service.as_ref().map_or(0, |s| s.0.len())
            + self
                .modulesets
                .as_ref()
                .map_or(0, |m| m.iter().map(|n| n.len() + 24).sum())
    }

    /// Whether `other` was made from the same state of the node (only the selection differs).
    fn same_state(&self, other: &RequestKey) -> bool {
        self.generation == other.generation
            && self.facts_hash == other.facts_hash
            && self.node_attach_version == other.node_attach_version
    }
}

/// SHA-256 of the inputs of a resolution.
type ContentKey = [u8; 32];

struct Blob {
    served: Arc<Served>,
    size: usize,
    refs: usize,
}

struct NodeEntries {
    entries: Vec<(RequestKey, ContentKey)>,
    bytes: usize,
    stamp: u64,
    used: bool,
}

/// The two-level cache (see the module documentation); the caller locks it.
struct Cache {
    budget: usize,
    nodes: HashMap<String, NodeEntries>,
    blobs: HashMap<ContentKey, Blob>,
    /// Nodes in the order they were last (re)considered, with the stamp they had then.
    order: VecDeque<(String, u64)>,
    bytes: usize,
    next_stamp: u64,
}

impl Cache {
    fn new(budget: usize) -> Cache {
        Cache {
            budget,
            nodes: HashMap::new(),
            blobs: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            next_stamp: 0,
        }
    }

    fn get(&mut self, node: &str, key: &RequestKey) -> Option<Arc<Served>> {
        let n = self.nodes.get_mut(node)?;
        let (_, content) = n.entries.iter().find(|(k, _)| k == key)?;
        n.used = true;
        self.blobs.get(content).map(|b| b.served.clone())
    }

    fn content(&self, content: &ContentKey) -> Option<Arc<Served>> {
        self.blobs.get(content).map(|b| b.served.clone())
    }

    /// Links `key` of `node` to `content`, storing `served` as that content if it is new.
    /// Returns what is now cached for it (the shared copy when there was one).
    fn insert(
        &mut self,
        node: &str,
        key: RequestKey,
        content: ContentKey,
        served: Arc<Served>,
    ) -> Arc<Served> {
        let size = served.json.len() + served.hash.len() + ENTRY_OVERHEAD;
        let per_node = self.budget / 8;
        if size + key.size() > per_node {
            // Too large to cache without crowding out other nodes: served uncached.
            return self.content(&content).unwrap_or(served);
        }
        let entry_size = key.size() + size;
        // The node's entries of another state can never be asked for again (or rarely: a
        // fact flapping back), and its oldest selections go first.
        let stale: Vec<(RequestKey, ContentKey)> = match self.nodes.get_mut(node) {
            Some(n) => {
                let mut out = Vec::new();
                n.entries.retain(|(k, c)| {
                    let keep = k.same_state(&key) && k != &key;
                    if !keep {
                        out.push((k.clone(), *c));
                    }
                    keep
                });
                while n.entries.len() >= MAX_PER_NODE
                    || (!n.entries.is_empty()
                        && n.bytes_after(&out, &self.blobs) + entry_size > per_node)
                {
                    let first = n.entries.remove(0);
                    out.push(first);
                }
                out
            }
            None => Vec::new(),
        };
        for (k, c) in stale {
            self.unlink(node, &k, &c);
        }
        let shared = match self.blobs.get_mut(&content) {
            Some(b) => {
                b.refs += 1;
                b.served.clone()
            }
            None => {
                self.blobs.insert(
                    content,
                    Blob {
                        served: served.clone(),
                        size,
                        refs: 1,
                    },
                );
                self.bytes += size;
                served
            }
        };
        let key_size = key.size();
        self.bytes += key_size;
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        let n = self.nodes.entry(node.to_string()).or_insert(NodeEntries {
            entries: Vec::new(),
            bytes: 0,
            stamp,
            used: false,
        });
        n.entries.push((key, content));
        n.bytes += key_size + size;
        n.stamp = stamp;
        self.order.push_back((node.to_string(), stamp));
        self.evict(node);
        if self.order.len() > 4 * self.nodes.len() + 1024 {
            let nodes = &self.nodes;
            self.order
                .retain(|(id, st)| nodes.get(id).is_some_and(|n| n.stamp == *st));
        }
        shared
    }

    /// Removes one request entry of `node` (its accounting; the caller removed it from the
    /// node's list).
    fn unlink(&mut self, node: &str, key: &RequestKey, content: &ContentKey) {
        let key_size = key.size();
        self.bytes -= key_size;
        let mut blob_size = 0;
        if let Some(b) = self.blobs.get_mut(content) {
            blob_size = b.size;
            b.refs -= 1;
            if b.refs == 0 {
                self.bytes -= b.size;
                self.blobs.remove(content);
            }
        }
        if let Some(n) = self.nodes.get_mut(node) {
            n.bytes = n.bytes.saturating_sub(key_size + blob_size);
        }
    }

    fn remove_node(&mut self, node: &str) {
        if let Some(n) = self.nodes.remove(node) {
            for (k, c) in n.entries {
                self.bytes -= k.size();
                if let Some(b) = self.blobs.get_mut(&c) {
                    b.refs -= 1;
                    if b.refs == 0 {
                        self.bytes -= b.size;
                        self.blobs.remove(&c);
                    }
                }
            }
        }
    }

    /// Evicts nodes, least recently used first, until the cache fits its budget (`keep` last).
    fn evict(&mut self, keep: &str) {
        let mut spared: Option<(String, u64)> = None;
        while self.bytes > self.budget {
            let Some((id, stamp)) = self.order.pop_front() else {
                break;
            };
            let Some(n) = self.nodes.get_mut(&id) else {
                continue;
            };
            if n.stamp != stamp {
                continue;
            }
            if id == keep {
                spared = Some((id, stamp));
                continue;
            }
            if n.used {
                // Second chance.
                n.used = false;
                n.stamp = self.next_stamp;
                self.next_stamp += 1;
                self.order.push_back((id, n.stamp));
                continue;
            }
            self.remove_node(&id);
        }
        if let Some(s) = spared {
            self.order.push_back(s);
        }
    }
}

impl NodeEntries {
    /// The node's bytes once `leaving` entries are gone.
    fn bytes_after(
        &self,
        leaving: &[(RequestKey, ContentKey)],
        blobs: &HashMap<ContentKey, Blob>,
    ) -> usize {
        let gone: usize = leaving
            .iter()
            .map(|(k, c)| k.size() + blobs.get(c).map_or(0, |b| b.size))
            .sum();
        self.bytes.saturating_sub(gone)
    }
}

/// Resolves and caches node policies.
pub struct Policies {
    store: Arc<dyn Store>,
    bundle: RwLock<Option<(u64, Arc<Bundle>)>>,
    cache: Mutex<Cache>,
}

impl Policies {
    /// A resolver over `store`, its cache holding at most [`DEFAULT_CACHE_BYTES`].
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::with_budget(store, DEFAULT_CACHE_BYTES)
    }

    /// A resolver whose cache holds at most `bytes`.
    pub fn with_budget(store: Arc<dyn Store>, bytes: usize) -> Self {
        Policies {
            store,
            bundle: RwLock::new(None),
            cache: Mutex::new(Cache::new(bytes)),
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
    /// (each must be attached, or a child of an attached one). The selection is a set: it is
    /// deduplicated and expanded in name order.
    pub fn resolve(
        &self,
        node: &NodeAuth,
        service: Option<&str>,
        modulesets: Option<Vec<String>>,
    ) -> Result<Arc<Served>> {
        let (generation, bundle) = self.bundle()?;
        let modulesets = modulesets.map(normalise);
        let service_attachments = match service {
            Some(s) => Some(self.store.attachments(&Target::Service(s.to_string()))?),
            None => None,
        };
        let key = RequestKey {
            generation,
            facts_hash: node.facts_hash.clone(),
            node_attach_version: node.attach_version,
            service: service
                .zip(service_attachments.as_ref())
                .map(|(s, a)| (s.to_string(), a.version)),
            modulesets: modulesets.clone(),
        };
        if let Some(hit) = self.cache.lock().expect("policy cache").get(&node.id, &key) {
            return Ok(hit);
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
        // Before the first facts push the node's name stands for its facts.
        let facts_id = if node.facts_hash.is_empty() {
            format!("name:{}", node.name)
        } else {
            format!("facts:{}", node.facts_hash)
        };
        let content = content_key(
            generation,
            &facts_id,
            service,
            &selected,
            &attachments.rulesets,
        );
        let shared = self.cache.lock().expect("policy cache").content(&content);
        if let Some(served) = shared {
            return Ok(self
                .cache
                .lock()
                .expect("policy cache")
                .insert(&node.id, key, content, served));
        }
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
        let served = Arc::new(Served {
            hash: policy.hash.clone(),
            json: Bytes::from(json),
        });
        // Keep what was served under its hash, so a result's policy_hash can be looked up
        // later. The hash covers modulesets, modules, rulesets and service, not the facts: the
        // first policy served with a hash is kept.
        if let Ok(text) = std::str::from_utf8(&served.json) {
            self.store.save_policy_snapshot(&served.hash, text)?;
        }
        Ok(self
            .cache
            .lock()
            .expect("policy cache")
            .insert(&node.id, key, content, served))
    }

    /// Request entries currently cached (for tests and metrics).
    pub fn cached(&self) -> usize {
        self.cache
            .lock()
            .expect("policy cache")
            .nodes
            .values()
            .map(|n| n.entries.len())
            .sum()
    }

    /// Bytes the cache holds (policies once each, plus the requests' keys).
    pub fn bytes(&self) -> usize {
        self.cache.lock().expect("policy cache").bytes
    }
}

/// A `?moduleset=` selection as a set: each name once, in name order.
pub fn normalise(mut modulesets: Vec<String>) -> Vec<String> {
    modulesets.sort_unstable();
    modulesets.dedup();
    modulesets
}

fn content_key(
    generation: u64,
    facts_id: &str,
    service: Option<&str>,
    modulesets: &[String],
    rulesets: &[String],
) -> ContentKey {
    let mut h = Sha256::new();
    // Lengths before strings: no two inputs give the same byte stream.
    let mut put = |s: &str| {
        h.update((s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    };
    put(&generation.to_string());
    put(facts_id);
    put(service.unwrap_or("\0none"));
    put(&modulesets.len().to_string());
    for m in modulesets {
        put(m);
    }
    put(&rulesets.len().to_string());
    for r in rulesets {
        put(r);
    }
    h.finalize().into()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(facts: &str, modulesets: Option<&[&str]>) -> RequestKey {
        RequestKey {
            generation: 1,
            facts_hash: facts.to_string(),
            node_attach_version: 0,
            service: None,
            modulesets: modulesets.map(|m| m.iter().map(|s| s.to_string()).collect()),
        }
    }

    fn served(n: usize) -> Arc<Served> {
        Arc::new(Served {
            hash: "h".into(),
            json: Bytes::from(vec![b'x'; n]),
        })
    }

    fn content(i: u32) -> ContentKey {
        content_key(1, &i.to_string(), None, &[], &[])
    }

    #[test]
    fn a_selection_is_a_set() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(normalise(v(&["b", "a", "b", "a", "a"])), v(&["a", "b"]));
    }

    #[test]
    fn nodes_with_equal_inputs_share_one_copy() {
        let mut c = Cache::new(1 << 20);
        let a = c.insert("n1", key("f", None), content(1), served(10_000));
        let b = c.insert("n2", key("f", None), content(1), served(10_000));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(c.blobs.len(), 1);
        assert!(c.bytes < 11_000 + 2 * 400, "{}", c.bytes);
        assert!(Arc::ptr_eq(&c.get("n2", &key("f", None)).unwrap(), &a));
    }

    #[test]
    fn a_new_facts_hash_replaces_the_node_entries() {
        let mut c = Cache::new(1 << 30);
        for i in 0..1000 {
            c.insert(
                "n1",
                key(&format!("f{i}"), None),
                content(i),
                served(10_000),
            );
        }
        assert_eq!(c.nodes["n1"].entries.len(), 1);
        assert_eq!(c.blobs.len(), 1);
        assert!(c.bytes < 11_000, "{}", c.bytes);
    }

    #[test]
    fn one_node_holds_a_bounded_number_of_selections_and_bytes() {
        let mut c = Cache::new(1 << 30);
        for i in 0..100u32 {
            let name = format!("ms{i}");
            c.insert("n1", key("f", Some(&[&name])), content(i), served(1000));
        }
        assert_eq!(c.nodes["n1"].entries.len(), MAX_PER_NODE);
        assert_eq!(c.blobs.len(), MAX_PER_NODE);
        // An eighth of the budget per node.
        let mut c = Cache::new(80_000);
        for i in 0..10u32 {
            let name = format!("ms{i}");
            c.insert("n1", key("f", Some(&[&name])), content(i), served(3000));
        }
        assert!(c.nodes["n1"].bytes <= 10_000, "{}", c.nodes["n1"].bytes);
        assert!(c.nodes["n1"].entries.len() <= 3);
    }

    #[test]
    fn the_byte_budget_holds_and_recently_used_nodes_stay() {
        let budget = 200_000;
        let mut c = Cache::new(budget);
        c.insert("hot", key("f", None), content(0), served(5000));
        for i in 1..500u32 {
            c.insert(&format!("n{i}"), key("f", None), content(i), served(5000));
            assert!(c.bytes <= budget, "{} > {budget}", c.bytes);
            // "hot" is fetched all the time.
            assert!(c.get("hot", &key("f", None)).is_some(), "evicted at {i}");
        }
        assert!(c.nodes.len() < 50);
        let accounted: usize = c.blobs.values().map(|b| b.size).sum::<usize>()
            + c.nodes
                .values()
                .flat_map(|n| n.entries.iter().map(|(k, _)| k.size()))
                .sum::<usize>();
        assert_eq!(accounted, c.bytes);
        assert!(c.order.len() <= 4 * c.nodes.len() + 1024);
    }

    #[test]
    fn a_policy_over_an_eighth_of_the_budget_is_not_cached() {
        let mut c = Cache::new(80_000);
        let s = c.insert("n1", key("f", None), content(1), served(20_000));
        assert_eq!(s.json.len(), 20_000);
        assert_eq!(c.bytes, 0);
        assert!(c.get("n1", &key("f", None)).is_none());
    }
}
