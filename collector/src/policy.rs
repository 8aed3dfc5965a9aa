//! A node's policy, resolved with the same `tenet-rulesets` code the agent runs masterless, and
//! cached: a fetch resolves (evaluates filtersets, merges nested variables) only when something
//! it depends on changed.
//!
//! The cache has two levels. Each node has a few *requests* (a selection: its attachments, a
//! service, a `?moduleset=` list, deduplicated and sorted) keyed by what the node's row says
//! (policy generation, facts hash, attachment versions), so a fleet fetching an unchanged
//! policy costs one credentials lookup and one generation read per request. Each request points
//! to a *content* entry: the resolved policy without its `facts` member, keyed by the digest of
//! its bytes, held once behind an `Arc` and shared by every node that resolved to the same
//! modulesets, modules, rulesets and service (nodes of one role, whatever their names and
//! other facts). The request entry keeps the node's own facts JSON; a response is the shared
//! part with those facts put back in (the `facts` member then comes last). Memory is bounded in bytes ([`DEFAULT_CACHE_BYTES`], `serve
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

/// A resolved policy, ready to send: the part nodes share and this node's facts, joined only
/// on the wire, so a cached fetch copies no policy bytes.
#[derive(Debug, Clone)]
pub struct Served {
    shared: Arc<Shared>,
    /// The node's `facts` member, as JSON.
    facts: Bytes,
}

impl Served {
    /// The policy's content hash (its ETag).
    pub fn hash(&self) -> &str {
        &self.shared.hash
    }

    /// The policy's JSON in pieces that concatenate to it: the shared object without its
    /// closing brace, the `facts` key, the facts, the closing brace. `facts` comes last.
    fn pieces(&self) -> [Bytes; 4] {
        let body = &self.shared.body;
        let key: &'static [u8] = if body.len() > 2 {
            b",\"facts\":"
        } else {
            b"\"facts\":"
        };
        [
            body.slice(..body.len() - 1),
            Bytes::from_static(key),
            self.facts.clone(),
            Bytes::from_static(b"}"),
        ]
    }

    /// The policy's JSON in one buffer (a copy: for the snapshot and tests, not for sending).
    pub fn to_vec(&self) -> Vec<u8> {
        self.pieces().concat()
    }

    /// The response body: the pieces written as they are, with an exact `Content-Length`.
    pub fn into_body(self) -> axum::body::Body {
        let pieces = VecDeque::from(self.pieces());
        let left = pieces.iter().map(|p| p.len() as u64).sum();
        axum::body::Body::new(Pieces { pieces, left })
    }
}

/// An HTTP body made of a few buffers sent one after the other.
struct Pieces {
    pieces: VecDeque<Bytes>,
    left: u64,
}

impl http_body::Body for Pieces {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::result::Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        std::task::Poll::Ready(this.pieces.pop_front().map(|p| {
            this.left -= p.len() as u64;
            Ok(http_body::Frame::data(p))
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.pieces.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
    }
}

/// What nodes share: a resolved policy's JSON object without its `facts` member.
#[derive(Debug)]
struct Shared {
    hash: String,
    /// `{"modulesets":…,"hash":"…"}`: a JSON object, never empty.
    body: Bytes,
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

/// SHA-256 of a [`Shared`] body.
type ContentKey = [u8; 32];

struct Blob {
    shared: Arc<Shared>,
    size: usize,
    refs: usize,
}

/// One request of a node: what its row said, the shared content, the node's facts JSON.
#[derive(Clone)]
struct Entry {
    key: RequestKey,
    content: ContentKey,
    facts: Bytes,
}

impl Entry {
    /// Bytes the entry itself holds (its content is counted once, in its blob).
    fn size(&self) -> usize {
        self.key.size() + self.facts.len()
    }
}

struct NodeEntries {
    entries: Vec<Entry>,
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

    /// The cached policy of `node` for `key`, with the node's facts.
    fn get(&mut self, node: &str, key: &RequestKey) -> Option<Served> {
        let n = self.nodes.get_mut(node)?;
        let e = n.entries.iter().find(|e| &e.key == key)?;
        n.used = true;
        self.blobs.get(&e.content).map(|b| Served {
            shared: b.shared.clone(),
            facts: e.facts.clone(),
        })
    }

    /// Links `key` of `node` to `shared` (stored once, whoever else resolved to it) and the
    /// node's `facts`.
    fn insert(&mut self, node: &str, key: RequestKey, shared: Arc<Shared>, facts: Bytes) {
        let content: ContentKey = Sha256::digest(&shared.body).into();
        let size = shared.body.len() + shared.hash.len() + ENTRY_OVERHEAD;
        let per_node = self.budget / 8;
        let entry = Entry {
            key,
            content,
            facts,
        };
        if size + entry.size() > per_node {
            // Too large to cache without crowding out other nodes: served uncached.
            return;
        }
        let entry_size = entry.size() + size;
        let key = &entry.key;
        // The node's entries of another state can never be asked for again (or rarely: a
        // fact flapping back), and its oldest selections go first.
        let stale: Vec<Entry> = match self.nodes.get_mut(node) {
            Some(n) => {
                let mut out = Vec::new();
                n.entries.retain(|e| {
                    let keep = e.key.same_state(key) && &e.key != key;
                    if !keep {
                        out.push(e.clone());
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
        for e in stale {
            self.unlink(node, &e);
        }
        match self.blobs.get_mut(&content) {
            Some(b) => b.refs += 1,
            None => {
                self.blobs.insert(
                    content,
                    Blob {
                        shared,
                        size,
                        refs: 1,
                    },
                );
                self.bytes += size;
            }
        }
        let key_size = entry.size();
        self.bytes += key_size;
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        let n = self.nodes.entry(node.to_string()).or_insert(NodeEntries {
            entries: Vec::new(),
            bytes: 0,
            stamp,
            used: false,
        });
        n.entries.push(entry);
        n.bytes += key_size + size;
        n.stamp = stamp;
        self.order.push_back((node.to_string(), stamp));
        self.evict(node);
        if self.order.len() > 4 * self.nodes.len() + 1024 {
            let nodes = &self.nodes;
            self.order
                .retain(|(id, st)| nodes.get(id).is_some_and(|n| n.stamp == *st));
        }
    }

    /// Removes one request entry of `node` (its accounting; the caller removed it from the
    /// node's list).
    fn unlink(&mut self, node: &str, entry: &Entry) {
        let key_size = entry.size();
        self.bytes -= key_size;
        let mut blob_size = 0;
        if let Some(b) = self.blobs.get_mut(&entry.content) {
            blob_size = b.size;
            b.refs -= 1;
            if b.refs == 0 {
                self.bytes -= b.size;
                self.blobs.remove(&entry.content);
            }
        }
        if let Some(n) = self.nodes.get_mut(node) {
            n.bytes = n.bytes.saturating_sub(key_size + blob_size);
        }
    }

    fn remove_node(&mut self, node: &str) {
        if let Some(n) = self.nodes.remove(node) {
            for e in n.entries {
                self.bytes -= e.size();
                if let Some(b) = self.blobs.get_mut(&e.content) {
                    b.refs -= 1;
                    if b.refs == 0 {
                        self.bytes -= b.size;
                        self.blobs.remove(&e.content);
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
    fn bytes_after(&self, leaving: &[Entry], blobs: &HashMap<ContentKey, Blob>) -> usize {
        let gone: usize = leaving
            .iter()
            .map(|e| e.size() + blobs.get(&e.content).map_or(0, |b| b.size))
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
    ) -> Result<Served> {
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
        let mut facts = self.store.node_facts(&node.id)?;
        if facts.node.is_empty() {
            // Before the first facts push the node's name stands for its facts.
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
        let facts_json =
            serde_json::to_vec(&policy.facts).map_err(|e| Error::Store(e.to_string()))?;
        let body = serde_json::to_vec(&SharedPart::of(&policy))
            .map_err(|e| Error::Store(e.to_string()))?;
        let shared = Arc::new(Shared {
            hash: policy.hash.clone(),
            body: Bytes::from(body),
        });
        let served = Served {
            shared,
            facts: Bytes::from(facts_json),
        };
        // Keep what was served under its hash, so a result's policy_hash can be looked up
        // later. The hash covers modulesets, modules, rulesets and service, not the facts: the
        // first policy served with a hash is kept.
        if let Ok(text) = String::from_utf8(served.to_vec()) {
            self.store.save_policy_snapshot(served.hash(), &text)?;
        }
        self.cache.lock().expect("policy cache").insert(
            &node.id,
            key,
            served.shared.clone(),
            served.facts.clone(),
        );
        Ok(served)
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

/// A policy without its `facts`: every other member, in `Policy`'s order, borrowed (the cold
/// path serialises once, with no intermediate value).
#[derive(serde::Serialize)]
struct SharedPart<'a> {
    modulesets: &'a [tenet_rulesets::PolicyModuleset],
    modules: &'a [tenet_rulesets::PolicyModule],
    rulesets: &'a [tenet_rulesets::PolicyRuleset],
    service: &'a Option<String>,
    warnings: &'a [String],
    hash: &'a str,
}

impl<'a> SharedPart<'a> {
    fn of(policy: &'a Policy) -> SharedPart<'a> {
        // Exhaustive on purpose: a member added to `Policy` must be placed here, or it would
        // silently vanish from what nodes receive.
        let Policy {
            modulesets,
            modules,
            rulesets,
            facts: _,
            service,
            warnings,
            hash,
        } = policy;
        SharedPart {
            modulesets,
            modules,
            rulesets,
            service,
            warnings,
            hash,
        }
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

    /// A shared part of `n` bytes; `tag` makes its content (and digest) distinct.
    fn shared(tag: u32, n: usize) -> Arc<Shared> {
        let head = format!("{{\"t\":{tag},\"x\":\"");
        let mut body = head.into_bytes();
        body.resize(n - 2, b'x');
        body.extend_from_slice(b"\"}");
        Arc::new(Shared {
            hash: "h".into(),
            body: Bytes::from(body),
        })
    }

    fn facts(name: &str) -> Bytes {
        Bytes::from(format!("{{\"node\":{{\"nodename\":\"{name}\"}}}}"))
    }

    #[test]
    fn a_selection_is_a_set() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(normalise(v(&["b", "a", "b", "a", "a"])), v(&["a", "b"]));
    }

    fn served(body: &'static [u8], facts: &'static [u8]) -> Served {
        Served {
            shared: Arc::new(Shared {
                hash: "h".into(),
                body: Bytes::from_static(body),
            }),
            facts: Bytes::from_static(facts),
        }
    }

    #[test]
    fn the_facts_are_put_back_as_the_last_member() {
        let s = served(
            br#"{"modules":[],"hash":"h"}"#,
            br#"{"node":{"nodename":"n1"}}"#,
        );
        assert_eq!(
            s.to_vec(),
            br#"{"modules":[],"hash":"h","facts":{"node":{"nodename":"n1"}}}"#
        );
        assert_eq!(served(b"{}", b"{}").to_vec(), br#"{"facts":{}}"#);
    }

    #[tokio::test]
    async fn the_body_sent_is_the_policy_with_its_exact_length() {
        use http_body_util::BodyExt;
        let s = served(br#"{"hash":"h"}"#, br#"{"node":{}}"#);
        let json = s.to_vec();
        let body = s.into_body();
        // The exact size is what lets hyper send a Content-Length instead of chunks.
        assert_eq!(
            http_body::Body::size_hint(&body).exact(),
            Some(json.len() as u64)
        );
        assert_eq!(body.collect().await.unwrap().to_bytes(), json);
    }

    #[test]
    fn a_served_policy_is_the_policy_whatever_the_split() {
        let bundle = tenet_rulesets::Bundle::default();
        let mut facts = tenet_rulesets::NodeFacts::default();
        facts.node.insert("nodename".into(), "n1".into());
        let policy = Policy::resolve(&bundle, &facts, &Selection::default()).unwrap();
        let served = Served {
            shared: Arc::new(Shared {
                hash: policy.hash.clone(),
                body: Bytes::from(serde_json::to_vec(&SharedPart::of(&policy)).unwrap()),
            }),
            facts: Bytes::from(serde_json::to_vec(&policy.facts).unwrap()),
        };
        let back: Policy = serde_json::from_slice(&served.to_vec()).unwrap();
        assert_eq!(back, policy);
    }

    #[test]
    fn nodes_with_equal_policies_share_one_copy_whatever_their_facts() {
        let mut c = Cache::new(1 << 20);
        c.insert("n1", key("f1", None), shared(1, 10_000), facts("n1"));
        c.insert("n2", key("f2", None), shared(1, 10_000), facts("n2"));
        assert_eq!(c.blobs.len(), 1);
        assert!(c.bytes < 10_000 + 2 * 400, "{}", c.bytes);
        let a = c.get("n1", &key("f1", None)).unwrap();
        let b = c.get("n2", &key("f2", None)).unwrap();
        let name = |s: &Served| {
            serde_json::from_slice::<serde_json::Value>(&s.to_vec()).unwrap()["facts"]["node"]
                ["nodename"]
                .clone()
        };
        assert_eq!(name(&a), "n1");
        assert_eq!(name(&b), "n2");
        assert!(c.get("n2", &key("f1", None)).is_none());
    }

    #[test]
    fn a_new_facts_hash_replaces_the_node_entries() {
        let mut c = Cache::new(1 << 30);
        for i in 0..1000 {
            c.insert(
                "n1",
                key(&format!("f{i}"), None),
                shared(i, 10_000),
                facts("n1"),
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
            c.insert("n1", key("f", Some(&[&name])), shared(i, 1000), facts("n1"));
        }
        assert_eq!(c.nodes["n1"].entries.len(), MAX_PER_NODE);
        assert_eq!(c.blobs.len(), MAX_PER_NODE);
        // An eighth of the budget per node.
        let mut c = Cache::new(80_000);
        for i in 0..10u32 {
            let name = format!("ms{i}");
            c.insert("n1", key("f", Some(&[&name])), shared(i, 3000), facts("n1"));
        }
        assert!(c.nodes["n1"].bytes <= 10_000, "{}", c.nodes["n1"].bytes);
        assert!(c.nodes["n1"].entries.len() <= 3);
    }

    #[test]
    fn the_byte_budget_holds_and_recently_used_nodes_stay() {
        let budget = 200_000;
        let mut c = Cache::new(budget);
        c.insert("hot", key("f", None), shared(0, 5000), facts("hot"));
        for i in 1..500u32 {
            c.insert(
                &format!("n{i}"),
                key("f", None),
                shared(i, 5000),
                facts("n"),
            );
            assert!(c.bytes <= budget, "{} > {budget}", c.bytes);
            // "hot" is fetched all the time.
            assert!(c.get("hot", &key("f", None)).is_some(), "evicted at {i}");
        }
        assert!(c.nodes.len() < 50);
        let accounted: usize = c.blobs.values().map(|b| b.size).sum::<usize>()
            + c.nodes
                .values()
                .flat_map(|n| n.entries.iter().map(Entry::size))
                .sum::<usize>();
        assert_eq!(accounted, c.bytes);
        assert!(c.order.len() <= 4 * c.nodes.len() + 1024);
    }

    #[test]
    fn a_policy_over_an_eighth_of_the_budget_is_not_cached() {
        let mut c = Cache::new(80_000);
        c.insert("n1", key("f", None), shared(1, 20_000), facts("n1"));
        assert_eq!(c.bytes, 0);
        assert!(c.get("n1", &key("f", None)).is_none());
    }
}
