//! The `bridge` class: a Linux bridge and its addresses, ports, STP, MTU, admin state and
//! routes, read and changed over rtnetlink (the agent never runs `ip` or `brctl`).
//!
//! A rule is `{"name": "br0", "addresses": ["10.0.0.7/24"], "stp": false, "ports": ["eth1"],
//! "mtu": 1500, "up": true, "routes": [{"action": "delete", "destination": "10.0.0.0/24"},
//! {"action": "replace", "destination": "10.0.0.1/32"}]}`. Only `name` is required; an omitted
//! key is not managed.
//!
//! - `addresses`: exactly these addresses (CIDR) are on the bridge: missing ones are added,
//!   others removed. IPv6 link-local addresses (`fe80::/10`, which the kernel assigns itself)
//!   are ignored.
//! - `ports`: exactly these interfaces are enslaved to the bridge; they must exist (fix does
//!   not create them, and does not change their up/down state). Other ports are detached.
//! - `stp`: the bridge's STP state is on (kernel STP) or off.
//! - `mtu`: the bridge's MTU (set after the ports are attached, since attaching one may lower
//!   it).
//! - `up`: the bridge is administratively up (or down).
//! - `routes`: the fixture's `post-up` lines. `delete`: no route of the main table to
//!   `destination` goes through the bridge (like `ip route del 10.0.0.0/24 dev br0`, used to
//!   drop the subnet route the kernel adds with an address). `replace`: a main-table route to
//!   `destination` goes through the bridge, with no gateway, link scope (like `ip route replace
//!   10.0.0.1/32 dev br0`). Routes are handled after addresses, which may add routes.
//!
//! check reports each difference on its own line; fix creates the bridge when it is missing,
//! then converges each managed key in the order above and checks again. A link with the
//! bridge's name that is not a bridge is refused.
//!
//! The class acts in the network namespace of the agent (of the thread running it): the root
//! prefix does not apply to network state. Tests run it inside namespaces they create.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    BridgeStpState, InfoBridge, InfoData, InfoKind, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteScope,
};
use rtnetlink::{Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};
use serde::Deserialize;
use serde_json::Value;

use crate::class::{Class, parse_rule};
use crate::host::{Host, HostView};
use crate::status::{Log, Status};

/// One `bridge` rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeRule {
    /// Interface name of the bridge (`br0`), at most 15 bytes.
    pub name: String,
    /// Exactly these addresses, CIDR (`10.0.0.7/24`, `fd00::7/64`); unset: not managed.
    #[serde(default)]
    pub addresses: Option<Vec<String>>,
    /// Spanning tree on (kernel STP) or off; unset: not managed.
    #[serde(default)]
    pub stp: Option<bool>,
    /// Exactly these interfaces enslaved to the bridge; unset: not managed.
    #[serde(default)]
    pub ports: Option<Vec<String>>,
    /// MTU of the bridge; unset: not managed.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Administratively up (true) or down (false); unset: not managed.
    #[serde(default)]
    pub up: Option<bool>,
    /// Routes through the bridge to delete or to put in place; unset: none managed.
    #[serde(default)]
    pub routes: Option<Vec<BridgeRoute>>,
}

/// One route of a bridge rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeRoute {
    /// `delete` (no such route through the bridge) or `replace` (the route goes through it).
    pub action: RouteAction,
    /// Destination prefix, CIDR with no host bits (`10.0.0.0/24`, `10.0.0.1/32`).
    pub destination: String,
}

/// What to do with a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteAction {
    /// No main-table route to the destination through the bridge.
    Delete,
    /// A main-table route to the destination through the bridge, no gateway.
    Replace,
}

/// The `bridge` class.
#[derive(Debug)]
pub struct Bridge;

/// An address or prefix: IP and prefix length.
type Cidr = (IpAddr, u8);

/// How long one netlink conversation may take.
const NETLINK_TIMEOUT: Duration = Duration::from_secs(20);

impl Class for Bridge {
    type Rule = BridgeRule;

    const NAME: &'static str = "bridge";
    const ALIASES: &'static [&'static str] = &["bridges"];
    const DESCRIPTION: &'static str =
        "a Linux bridge: addresses, ports, STP, MTU, up, routes (netlink, current network namespace)";

    fn rules(value: &Value) -> Result<Vec<BridgeRule>, String> {
        let items: Vec<&Value> = match value {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        items
            .into_iter()
            .map(|v| parse_rule::<BridgeRule>(v).and_then(validate))
            .collect()
    }

    fn describe(rule: &BridgeRule) -> String {
        rule.name.clone()
    }

    fn check(rule: &BridgeRule, _host: &HostView, log: &mut Log) -> Status {
        match netlink(|h| read_state(h, rule)) {
            Ok(state) => report(rule, &state, log),
            Err(e) => {
                log.err(format!("bridge {}: {e}", rule.name));
                Status::Nok
            }
        }
    }

    fn fixable(rule: &BridgeRule, _host: &HostView, log: &mut Log) -> Status {
        let state = match netlink(|h| read_state(h, rule)) {
            Ok(s) => s,
            Err(e) => {
                log.err(format!("bridge {}: {e}", rule.name));
                return Status::Nok;
            }
        };
        if let Some(kind) = state.not_a_bridge() {
            log.err(format!(
                "bridge {}: a {kind} link has this name; it will not be replaced",
                rule.name
            ));
            return Status::Nok;
        }
        let missing = state.missing_ports(rule);
        if !missing.is_empty() {
            log.err(format!(
                "bridge {}: port(s) {} do not exist",
                rule.name,
                missing.join(", ")
            ));
            return Status::Nok;
        }
        Status::Ok
    }

    fn fix(rule: &BridgeRule, host: &Host, log: &mut Log) -> Status {
        if let Err(e) = netlink(|h| converge(h, rule, log)) {
            log.err(format!("bridge {}: {e}", rule.name));
            return Status::Nok;
        }
        let mut after = Log::new();
        let st = Self::check(rule, host.view(), &mut after);
        if st != Status::Ok {
            for l in after.lines().iter().filter(|l| l.stream == crate::status::Stream::Err) {
                log.err(format!("after fix: {}", l.text));
            }
        }
        st
    }
}

fn validate(rule: BridgeRule) -> Result<BridgeRule, String> {
    let n = &rule.name;
    if n.is_empty() || n.len() > 15 || n.contains(['/', ':']) || n.contains(char::is_whitespace) {
        return Err(format!(
            "name: {n:?} is not an interface name (1 to 15 bytes, no '/', ':' or space)"
        ));
    }
    for (i, a) in rule.addresses.iter().flatten().enumerate() {
        parse_cidr(a).map_err(|e| format!("addresses[{i}]: {e}"))?;
    }
    for (i, p) in rule.ports.iter().flatten().enumerate() {
        if p.is_empty() || p.len() > 15 || p == n {
            return Err(format!("ports[{i}]: {p:?} is not a valid port name"));
        }
    }
    if let Some(mtu) = rule.mtu
        && !(68..=65535).contains(&mtu)
    {
        return Err(format!("mtu: {mtu} is out of range (68 to 65535)"));
    }
    for (i, r) in rule.routes.iter().flatten().enumerate() {
        let (ip, len) =
            parse_cidr(&r.destination).map_err(|e| format!("routes[{i}].destination: {e}"))?;
        if network(ip, len) != ip {
            return Err(format!(
                "routes[{i}].destination: {} has host bits set (the prefix is {}/{len})",
                r.destination,
                network(ip, len)
            ));
        }
    }
    Ok(rule)
}

/// Parses `ip/len` (a bare IP is a host prefix).
fn parse_cidr(s: &str) -> Result<Cidr, String> {
    let (ip, len) = match s.trim().split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (s.trim(), None),
    };
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("{s:?} is not an address in CIDR notation"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("{s:?}: prefix length must be 0 to {max}"))?,
    };
    Ok((ip, len))
}

/// The network address of `ip/len`.
fn network(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len as u32) };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - len as u32) };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

fn show(c: &Cidr) -> String {
    format!("{}/{}", c.0, c.1)
}

/// Runs one netlink conversation on a private current-thread runtime, in the calling
/// thread's network namespace.
fn netlink<T, F, Fut>(f: F) -> Result<T, String>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| format!("cannot start the netlink runtime: {e}"))?;
    rt.block_on(async move {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| format!("netlink socket: {e}"))?;
        let task = tokio::spawn(conn);
        let result = tokio::time::timeout(NETLINK_TIMEOUT, f(handle))
            .await
            .unwrap_or_else(|_| Err(format!("netlink: no answer in {NETLINK_TIMEOUT:?}")));
        task.abort();
        result
    })
}

fn nl_err(what: &str) -> impl Fn(rtnetlink::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// A link as this class sees it.
#[derive(Debug, Clone)]
struct Link {
    index: u32,
    name: String,
    kind: Option<String>,
    up: bool,
    mtu: Option<u32>,
    master: Option<u32>,
    stp: Option<bool>,
}

fn parse_link(m: &LinkMessage) -> Link {
    let mut l = Link {
        index: m.header.index,
        name: String::new(),
        kind: None,
        up: m.header.flags.contains(LinkFlags::Up),
        mtu: None,
        master: None,
        stp: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Mtu(v) => l.mtu = Some(*v),
            LinkAttribute::Controller(c) => l.master = Some(*c),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        LinkInfo::Kind(k) => l.kind = Some(kind_name(k)),
                        LinkInfo::Data(InfoData::Bridge(opts)) => {
                            for o in opts {
                                if let InfoBridge::StpState(s) = o {
                                    l.stp = Some(!matches!(s, BridgeStpState::Disabled));
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    l
}

fn kind_name(k: &InfoKind) -> String {
    match k {
        InfoKind::Bridge => "bridge".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Everything the class reads from the kernel.
#[derive(Debug, Default)]
struct State {
    links: Vec<Link>,
    /// The link with the rule's name.
    bridge: Option<Link>,
    /// Its addresses (IPv6 link-local excluded), with the messages to delete them.
    addresses: Vec<(Cidr, AddressMessage)>,
    /// Main-table routes through it.
    routes: Vec<(Cidr, bool, RouteMessage)>,
}

impl State {
    fn not_a_bridge(&self) -> Option<String> {
        self.bridge
            .as_ref()
            .filter(|b| b.kind.as_deref() != Some("bridge"))
            .map(|b| b.kind.clone().unwrap_or_else(|| "non-virtual".into()))
    }

    fn missing_ports(&self, rule: &BridgeRule) -> Vec<String> {
        rule.ports
            .iter()
            .flatten()
            .filter(|p| !self.links.iter().any(|l| &l.name == *p))
            .cloned()
            .collect()
    }

    fn link(&self, index: u32) -> Option<&Link> {
        self.links.iter().find(|l| l.index == index)
    }
}

async fn read_state(h: Handle, rule: &BridgeRule) -> Result<State, String> {
    let mut links = Vec::new();
    let mut s = h.link().get().execute();
    while let Some(m) = s.try_next().await.map_err(nl_err("list links"))? {
        links.push(parse_link(&m));
    }
    let bridge = links.iter().find(|l| l.name == rule.name).cloned();
    let mut state = State {
        links,
        bridge: bridge.clone(),
        ..State::default()
    };
    let Some(br) = bridge else {
        return Ok(state);
    };
    let mut s = h
        .address()
        .get()
        .set_link_index_filter(br.index)
        .execute();
    while let Some(m) = s.try_next().await.map_err(nl_err("list addresses"))? {
        if m.header.index != br.index {
            continue;
        }
        let local = m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        });
        let addr = local.or_else(|| {
            m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            })
        });
        let Some(ip) = addr else { continue };
        if let IpAddr::V6(v6) = ip
            && (v6.segments()[0] & 0xffc0) == 0xfe80
        {
            continue;
        }
        state.addresses.push(((ip, m.header.prefix_len), m));
    }
    if rule.routes.as_ref().is_some_and(|r| !r.is_empty()) {
        for family in [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
        ] {
            let mut s = h.route().get(family).execute();
            while let Some(m) = s.try_next().await.map_err(nl_err("list routes"))? {
                if let Some(r) = route_through(&m, br.index) {
                    state.routes.push((r.0, r.1, m));
                }
            }
        }
    }
    Ok(state)
}

/// For a main-table route through link `index`: its destination and whether it has no
/// gateway.
fn route_through(m: &RouteMessage, index: u32) -> Option<(Cidr, bool)> {
    let table = m
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(m.header.table as u32);
    if table != RouteHeader::RT_TABLE_MAIN as u32 {
        return None;
    }
    let mut oif = None;
    let mut dst = None;
    let mut gateway = false;
    for a in &m.attributes {
        match a {
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = Some(IpAddr::V4(*a)),
            RouteAttribute::Destination(RouteAddress::Inet6(a)) => dst = Some(IpAddr::V6(*a)),
            RouteAttribute::Gateway(_) | RouteAttribute::Via(_) => gateway = true,
            _ => {}
        }
    }
    if oif != Some(index) {
        return None;
    }
    let len = m.header.destination_prefix_length;
    let dst = dst.unwrap_or(match m.header.address_family {
        rtnetlink::packet_route::AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    });
    Some(((dst, len), !gateway))
}

fn wanted_addresses(rule: &BridgeRule) -> Option<Vec<Cidr>> {
    rule.addresses
        .as_ref()
        .map(|a| a.iter().filter_map(|s| parse_cidr(s).ok()).collect())
}

/// Logs each difference; ok when there is none.
fn report(rule: &BridgeRule, state: &State, log: &mut Log) -> Status {
    let name = &rule.name;
    let Some(br) = &state.bridge else {
        log.err(format!("bridge {name}: missing"));
        return Status::Nok;
    };
    if let Some(kind) = state.not_a_bridge() {
        log.err(format!("bridge {name}: the {kind} link {name} is not a bridge"));
        return Status::Nok;
    }
    let mut diffs = Vec::new();
    if let Some(want) = wanted_addresses(rule) {
        let have: Vec<Cidr> = state.addresses.iter().map(|(c, _)| *c).collect();
        for a in want.iter().filter(|a| !have.contains(a)) {
            diffs.push(format!("address {} missing", show(a)));
        }
        for a in have.iter().filter(|a| !want.contains(a)) {
            diffs.push(format!("unexpected address {}", show(a)));
        }
    }
    if let Some(ports) = &rule.ports {
        for p in ports {
            match state.links.iter().find(|l| &l.name == p) {
                None => diffs.push(format!("port {p} does not exist")),
                Some(l) if l.master == Some(br.index) => {}
                Some(l) => diffs.push(match l.master.and_then(|m| state.link(m)) {
                    Some(m) => format!("port {p} is attached to {}, not to {name}", m.name),
                    None => format!("port {p} is not attached"),
                }),
            }
        }
        for l in state.links.iter().filter(|l| l.master == Some(br.index)) {
            if !ports.contains(&l.name) {
                diffs.push(format!("unexpected port {}", l.name));
            }
        }
    }
    if let Some(stp) = rule.stp
        && br.stp != Some(stp)
    {
        let have = match br.stp {
            Some(true) => "on",
            Some(false) => "off",
            None => "unknown",
        };
        diffs.push(format!(
            "stp is {have}, expected {}",
            if stp { "on" } else { "off" }
        ));
    }
    if let Some(mtu) = rule.mtu
        && br.mtu != Some(mtu)
    {
        diffs.push(format!(
            "mtu is {}, expected {mtu}",
            br.mtu.map_or("unknown".into(), |m| m.to_string())
        ));
    }
    if let Some(up) = rule.up
        && br.up != up
    {
        diffs.push(format!(
            "is {}, expected {}",
            if br.up { "up" } else { "down" },
            if up { "up" } else { "down" }
        ));
    }
    for r in rule.routes.iter().flatten() {
        let Ok(dst) = parse_cidr(&r.destination) else {
            continue;
        };
        let through: Vec<&(Cidr, bool, RouteMessage)> =
            state.routes.iter().filter(|(c, _, _)| *c == dst).collect();
        match r.action {
            RouteAction::Delete if !through.is_empty() => diffs.push(format!(
                "route {} dev {name} present, expected deleted",
                show(&dst)
            )),
            RouteAction::Replace if !through.iter().any(|(_, direct, _)| *direct) => {
                diffs.push(format!("route {} dev {name} missing", show(&dst)))
            }
            _ => {}
        }
    }
    if diffs.is_empty() {
        log.info(format!("bridge {name}: ok"));
        Status::Ok
    } else {
        for d in diffs {
            log.err(format!("bridge {name}: {d}"));
        }
        Status::Nok
    }
}

/// Brings the kernel state to the rule, step by step.
async fn converge(h: Handle, rule: &BridgeRule, log: &mut Log) -> Result<(), String> {
    let name = &rule.name;
    let mut state = read_state(h.clone(), rule).await?;
    if let Some(kind) = state.not_a_bridge() {
        return Err(format!("the {kind} link {name} is not a bridge; refusing to replace it"));
    }
    let missing = state.missing_ports(rule);
    if !missing.is_empty() {
        return Err(format!("port(s) {} do not exist", missing.join(", ")));
    }
    if state.bridge.is_none() {
        let mut b = LinkMessageBuilder::<LinkBridge>::new(name);
        if let Some(stp) = rule.stp {
            b = b.stp_state(stp_state(stp));
        }
        h.link()
            .add(b.build())
            .execute()
            .await
            .map_err(nl_err("create the bridge"))?;
        log.info(format!("bridge {name}: created"));
        state = read_state(h.clone(), rule).await?;
    }
    let br = state
        .bridge
        .clone()
        .ok_or_else(|| "missing right after it was created".to_string())?;
    let idx = br.index;

    if let Some(ports) = &rule.ports {
        for p in ports {
            let Some(l) = state.links.iter().find(|l| &l.name == p) else {
                continue;
            };
            if l.master != Some(idx) {
                let msg = LinkUnspec::new_with_index(l.index).controller(idx).build();
                h.link()
                    .change(msg)
                    .execute()
                    .await
                    .map_err(nl_err(&format!("attach port {p}")))?;
                log.info(format!("bridge {name}: port {p} attached"));
            }
        }
        for l in state.links.iter().filter(|l| l.master == Some(idx)) {
            if !ports.contains(&l.name) {
                let msg = LinkUnspec::new_with_index(l.index).nocontroller().build();
                h.link()
                    .change(msg)
                    .execute()
                    .await
                    .map_err(nl_err(&format!("detach port {}", l.name)))?;
                log.info(format!("bridge {name}: port {} detached", l.name));
            }
        }
        state = read_state(h.clone(), rule).await?;
    }
    let br = state.bridge.clone().unwrap_or(br);
    if let Some(mtu) = rule.mtu
        && br.mtu != Some(mtu)
    {
        let msg = LinkUnspec::new_with_index(idx).mtu(mtu).build();
        h.link().change(msg).execute().await.map_err(nl_err("set the mtu"))?;
        log.info(format!("bridge {name}: mtu set to {mtu}"));
    }
    if let Some(stp) = rule.stp
        && br.stp != Some(stp)
    {
        let msg = LinkMessageBuilder::<LinkBridge>::new_with_info_kind(InfoKind::Bridge)
            .index(idx)
            .stp_state(stp_state(stp))
            .build();
        h.link().change(msg).execute().await.map_err(nl_err("set stp"))?;
        log.info(format!("bridge {name}: stp turned {}", if stp { "on" } else { "off" }));
    }
    if let Some(up) = rule.up
        && br.up != up
    {
        let b = LinkUnspec::new_with_index(idx);
        let msg = if up { b.up() } else { b.down() }.build();
        h.link().change(msg).execute().await.map_err(nl_err("set the admin state"))?;
        log.info(format!("bridge {name}: set {}", if up { "up" } else { "down" }));
    }
    if let Some(want) = wanted_addresses(rule) {
        for (c, m) in &state.addresses {
            if !want.contains(c) {
                h.address()
                    .del(m.clone())
                    .execute()
                    .await
                    .map_err(nl_err(&format!("remove address {}", show(c))))?;
                log.info(format!("bridge {name}: address {} removed", show(c)));
            }
        }
        for c in &want {
            if !state.addresses.iter().any(|(h, _)| h == c) {
                h.address()
                    .add(idx, c.0, c.1)
                    .execute()
                    .await
                    .map_err(nl_err(&format!("add address {}", show(c))))?;
                log.info(format!("bridge {name}: address {} added", show(c)));
            }
        }
    }
    if rule.routes.as_ref().is_some_and(|r| !r.is_empty()) {
        let state = read_state(h.clone(), rule).await?;
        for r in rule.routes.iter().flatten() {
            let Ok(dst) = parse_cidr(&r.destination) else {
                continue;
            };
            match r.action {
                RouteAction::Delete => {
                    for (c, _, m) in state.routes.iter().filter(|(c, _, _)| *c == dst) {
                        h.route()
                            .del(m.clone())
                            .execute()
                            .await
                            .map_err(nl_err(&format!("delete route {}", show(c))))?;
                        log.info(format!("bridge {name}: route {} deleted", show(c)));
                    }
                }
                RouteAction::Replace => {
                    let ok = state
                        .routes
                        .iter()
                        .any(|(c, direct, _)| *c == dst && *direct);
                    if ok {
                        continue;
                    }
                    let msg = match dst.0 {
                        IpAddr::V4(a) => RouteMessageBuilder::<Ipv4Addr>::new()
                            .destination_prefix(a, dst.1)
                            .output_interface(idx)
                            .scope(RouteScope::Link)
                            .build(),
                        IpAddr::V6(a) => RouteMessageBuilder::<Ipv6Addr>::new()
                            .destination_prefix(a, dst.1)
                            .output_interface(idx)
                            .build(),
                    };
                    h.route()
                        .add(msg)
                        .replace()
                        .execute()
                        .await
                        .map_err(nl_err(&format!("replace route {}", show(&dst))))?;
                    log.info(format!("bridge {name}: route {} dev {name} in place", show(&dst)));
                }
            }
        }
    }
    Ok(())
}

fn stp_state(on: bool) -> BridgeStpState {
    if on {
        BridgeStpState::KernelStp
    } else {
        BridgeStpState::Disabled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Netns, assert_class_contract, check, require_root};
    use serde_json::json;

    #[test]
    fn bad_rules_name_the_field() {
        for (v, needle) in [
            (json!({"name": "a-very-long-bridge-name"}), "name"),
            (json!({"name": "br0", "addresses": ["10.0.0.7"]}), ""),
            (json!({"name": "br0", "addresses": ["10.0.0.300/24"]}), "addresses[0]"),
            (json!({"name": "br0", "addresses": ["10.0.0.7/33"]}), "addresses[0]"),
            (json!({"name": "br0", "mtu": 10}), "mtu"),
            (json!({"name": "br0", "ports": ["br0"]}), "ports[0]"),
            (json!({"name": "br0", "routes": [{"action": "add", "destination": "10.0.0.0/24"}]}), "unknown variant `add`"),
            (json!({"name": "br0", "routes": [{"action": "delete", "destination": "10.0.0.7/24"}]}), "routes[0].destination: 10.0.0.7/24 has host bits set"),
            (json!({"name": "br0", "stp": "off"}), "invalid type"),
            (json!({"name": "br0", "bridge_ports": []}), "unknown field `bridge_ports`"),
        ] {
            match Bridge::rules(&v) {
                Ok(_) if needle.is_empty() => {}
                Ok(_) => panic!("{v}: accepted"),
                Err(e) => assert!(!needle.is_empty() && e.contains(needle), "{v}: {e}"),
            }
        }
        assert_eq!(
            network("10.0.0.7".parse().unwrap(), 24),
            "10.0.0.0".parse::<IpAddr>().unwrap()
        );
    }

    /// The class contract in a network namespace of its own: from nothing (a veth pair and
    /// no bridge) to the fixture's br0, routes included; then drift is reported line by line.
    #[test]
    #[cfg_attr(tenet_unprivileged, ignore = "needs root: run the tests as root")]
    fn contract_in_a_network_namespace() {
        if !require_root("bridge::contract_in_a_network_namespace") {
            return;
        }
        let ns = Netns::new("brc");
        ns.ip(&["link", "add", "eth1", "type", "veth", "peer", "name", "eth1p"]);
        ns.ip(&["link", "add", "eth2", "type", "veth", "peer", "name", "eth2p"]);
        let root = tempfile::tempdir().unwrap();
        let host = Host::new(root.path()).with_var_dir(root.path().join("var"));
        let rule = json!({
            "name": "br0", "addresses": ["10.0.0.7/24"], "stp": false, "ports": ["eth1"],
            "mtu": 1400, "up": true,
            "routes": [
                {"action": "delete", "destination": "10.0.0.0/24"},
                {"action": "replace", "destination": "10.0.0.1/32"}
            ]
        });
        ns.run(|| {
            let log = assert_class_contract::<Bridge>(&host, &[root.path()], rule.clone());
            assert_eq!(log, vec!["bridge br0: missing".to_string()]);
        });
        // Drift, made with ip(8) from outside: a port too many, stp on, down.
        ns.ip(&["link", "set", "eth2", "master", "br0"]);
        ns.ip(&["link", "set", "br0", "type", "bridge", "stp_state", "1"]);
        ns.ip(&["link", "set", "br0", "down"]);
        ns.ip(&["addr", "add", "10.0.1.7/24", "dev", "br0"]);
        ns.run(|| {
            let (st, log) = check::<Bridge>(&host, rule.clone());
            assert_eq!(st, Status::Nok);
            for needle in [
                "bridge br0: unexpected port eth2",
                "bridge br0: stp is on, expected off",
                "bridge br0: is down, expected up",
                "bridge br0: unexpected address 10.0.1.7/24",
            ] {
                assert!(log.iter().any(|l| l == needle), "{needle}: {log:#?}");
            }
            assert_class_contract::<Bridge>(&host, &[root.path()], rule.clone());
        });
        // A veth named like the bridge is not replaced.
        ns.ip(&["link", "add", "br1", "type", "veth", "peer", "name", "br1p"]);
        ns.run(|| {
            let (st, log) = crate::testing::fix::<Bridge>(&host, json!({"name": "br1", "up": true}));
            assert_eq!(st, Status::Nok);
            assert!(log.iter().any(|l| l.contains("is not a bridge")), "{log:?}");
            let (st, log) = check::<Bridge>(&host, json!({"name": "br2", "ports": ["nosuch0"]}));
            assert_eq!(st, Status::Nok);
            assert_eq!(log, vec!["bridge br2: missing".to_string()]);
            let rules = Bridge::rules(&json!({"name": "br2", "ports": ["nosuch0"]})).unwrap();
            let mut l = Log::new();
            assert_eq!(Bridge::fixable(&rules[0], host.view(), &mut l), Status::Nok);
            assert!(l.last_error().unwrap().contains("nosuch0 do not exist"));
        });
    }
}
