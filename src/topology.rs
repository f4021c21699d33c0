//! The network as configured: feeder → transformer → meters.
//!
//! Built once from `[[devices]]` (a meter's `parent`, every device's `site`/`feeder`,
//! `customers`, `phase`, `location`) and shared read-only by the KPI engine (aggregation per
//! transformer, feeder, site) and fault localisation (which element explains a set of dark
//! meters). Devices that register themselves at run time (MQTT auto-registration) can be
//! added with [`Topology::insert`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::config::DeviceConfig;

/// Kind name of the devices that group meters (the LV side of one distribution transformer).
pub const TRANSFORMER: &str = "transformer";
/// Kind name of customer meters.
pub const METER: &str = "meter";

/// Which LV phase a single-phase meter is connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Phase A (L1).
    A,
    /// Phase B (L2).
    B,
    /// Phase C (L3).
    C,
}

impl Phase {
    /// All three phases, in order.
    pub const ALL: [Phase; 3] = [Phase::A, Phase::B, Phase::C];

    /// Lower-case letter, as used in field names (`voltage_b`) and topics.
    pub fn letter(self) -> &'static str {
        match self {
            Phase::A => "a",
            Phase::B => "b",
            Phase::C => "c",
        }
    }
}

/// A feeder is named by its site and its own name (names repeat across substations).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FeederKey {
    /// Site (substation).
    pub site: String,
    /// Feeder name.
    pub feeder: String,
}

/// One device in the network.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    /// Device id.
    pub id: String,
    /// Device kind (`transformer`, `meter`, ...).
    pub kind: String,
    /// Site.
    pub site: String,
    /// Feeder.
    pub feeder: String,
    /// Parent device id, if any.
    pub parent: Option<String>,
    /// Direct children, sorted.
    pub children: Vec<String>,
    /// Customers supplied through this device itself (meters: default 1).
    pub customers: u32,
    /// Phase of a single-phase meter; `None` = three-phase (or unknown).
    pub phase: Option<Phase>,
    /// Free-text location for crews.
    pub location: Option<String>,
}

impl Node {
    /// A device with one customer, three-phase, no location and no children yet.
    pub fn new(id: &str, kind: &str, site: &str, feeder: &str, parent: Option<&str>) -> Node {
        Node {
            id: id.into(),
            kind: kind.into(),
            site: site.into(),
            feeder: feeder.into(),
            parent: parent.map(Into::into),
            children: Vec::new(),
            customers: 1,
            phase: None,
            location: None,
        }
    }
}

/// A topology problem found by [`Topology::problems`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Index of the device in `[[devices]]` (for the config key path), when it has one.
    pub index: Option<usize>,
    /// Key under the device (`parent`, `feeder`, ...).
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
    /// Errors stop the daemon; warnings are printed by `gridwatch check`.
    pub fatal: bool,
}

/// The configured network.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    nodes: HashMap<String, Node>,
    order: Vec<String>,
}

impl Topology {
    /// Builds the topology from the enabled devices of a config.
    pub fn from_devices(devices: &[DeviceConfig]) -> Self {
        let mut t = Topology::default();
        // Linked in one pass below: `insert` looks for a new node's children among all
        // nodes, which over 10,000 configured devices is 50 million comparisons at start-up.
        for d in devices.iter().filter(|d| d.enabled) {
            let node = Node {
                id: d.id.clone(),
                kind: d.kind.clone(),
                site: d.site.clone(),
                feeder: d.feeder.clone(),
                parent: d.parent.clone(),
                children: Vec::new(),
                customers: d.customers,
                phase: d.phase,
                location: d.location.clone(),
            };
            // A repeated id (the config check reports it): the last one wins, as in `insert`.
            if t.nodes.insert(d.id.clone(), node).is_none() {
                t.order.push(d.id.clone());
            }
        }
        let mut children: HashMap<String, Vec<String>> = HashMap::new();
        for n in t.nodes.values() {
            if let Some(p) = n.parent.as_ref().filter(|p| t.nodes.contains_key(*p)) {
                children.entry(p.clone()).or_default().push(n.id.clone());
            }
        }
        for (parent, mut kids) in children {
            kids.sort();
            if let Some(p) = t.nodes.get_mut(&parent) {
                p.children = kids;
            }
        }
        t
    }

    /// Adds (or replaces) a device, linking it under its parent when that is known.
    pub fn insert(&mut self, mut node: Node) {
        if let Some(old) = self.nodes.remove(&node.id) {
            if let Some(p) = old.parent.as_ref().and_then(|p| self.nodes.get_mut(p)) {
                p.children.retain(|c| c != &old.id);
            }
            node.children = old.children;
        } else {
            self.order.push(node.id.clone());
            // Children configured before their parent point at it already.
            let mut kids: Vec<String> = self
                .nodes
                .values()
                .filter(|n| n.parent.as_deref() == Some(node.id.as_str()))
                .map(|n| n.id.clone())
                .collect();
            kids.sort();
            node.children = kids;
        }
        if let Some(p) = node.parent.as_ref().and_then(|p| self.nodes.get_mut(p))
            && let Err(i) = p.children.binary_search(&node.id)
        {
            p.children.insert(i, node.id.clone());
        }
        self.nodes.insert(node.id.clone(), node);
    }

    /// The device with this id.
    pub fn get(&self, id: &str) -> Option<&Node> {
        self.nodes.get(id)
    }

    /// Every device, in configuration order.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.order.iter().filter_map(|id| self.nodes.get(id))
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no devices.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The feeder a device belongs to.
    pub fn feeder_of(&self, id: &str) -> Option<FeederKey> {
        self.nodes.get(id).map(|n| FeederKey {
            site: n.site.clone(),
            feeder: n.feeder.clone(),
        })
    }

    /// The nearest transformer at or above `id` (a meter's supplying transformer).
    pub fn transformer_of(&self, id: &str) -> Option<&str> {
        self.ancestors_and_self(id)
            .find(|n| n.kind == TRANSFORMER)
            .map(|n| n.id.as_str())
    }

    /// `id` and then its parents up to the root; stops on a cycle.
    pub fn ancestors_and_self<'a>(&'a self, id: &str) -> impl Iterator<Item = &'a Node> + 'a {
        let mut next = self.nodes.get(id);
        let mut seen = BTreeSet::new();
        std::iter::from_fn(move || {
            let n = next?;
            if !seen.insert(n.id.as_str()) {
                return None;
            }
            next = n.parent.as_ref().and_then(|p| self.nodes.get(p));
            Some(n)
        })
    }

    /// Every device below `id` (not `id` itself), depth first, sorted per level; cycle-safe.
    pub fn descendants(&self, id: &str) -> Vec<&Node> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::from([id.to_string()]);
        let mut stack: Vec<&str> = self
            .nodes
            .get(id)
            .map(|n| n.children.iter().rev().map(String::as_str).collect())
            .unwrap_or_default();
        while let Some(c) = stack.pop() {
            if !seen.insert(c.to_string()) {
                continue;
            }
            if let Some(n) = self.nodes.get(c) {
                out.push(n);
                stack.extend(n.children.iter().rev().map(String::as_str));
            }
        }
        out
    }

    /// The meters supplied through `id` (itself included when it is a meter).
    pub fn meters_under(&self, id: &str) -> Vec<&Node> {
        let mut out: Vec<&Node> = self
            .nodes
            .get(id)
            .filter(|n| n.kind == METER)
            .into_iter()
            .collect();
        out.extend(self.descendants(id).into_iter().filter(|n| n.kind == METER));
        out
    }

    /// Customers supplied through `id`: the sum over its meters (or its own count when it
    /// has no meters below it).
    pub fn customers_under(&self, id: &str) -> u64 {
        let meters = self.meters_under(id);
        if meters.is_empty() {
            return self.nodes.get(id).map_or(0, |n| u64::from(n.customers));
        }
        meters.iter().map(|m| u64::from(m.customers)).sum()
    }

    /// Transformers on a feeder, sorted by id.
    pub fn transformers_on(&self, feeder: &FeederKey) -> Vec<&Node> {
        let mut out: Vec<&Node> = self
            .nodes
            .values()
            .filter(|n| n.kind == TRANSFORMER && n.site == feeder.site && n.feeder == feeder.feeder)
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Meters on a feeder (by their own `site`/`feeder`), sorted by id.
    pub fn meters_on(&self, feeder: &FeederKey) -> Vec<&Node> {
        let mut out: Vec<&Node> = self
            .nodes
            .values()
            .filter(|n| n.kind == METER && n.site == feeder.site && n.feeder == feeder.feeder)
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Every feeder with at least one device, with its devices' ids.
    pub fn feeders(&self) -> BTreeMap<FeederKey, Vec<&str>> {
        let mut out: BTreeMap<FeederKey, Vec<&str>> = BTreeMap::new();
        for n in self.nodes() {
            out.entry(FeederKey {
                site: n.site.clone(),
                feeder: n.feeder.clone(),
            })
            .or_default()
            .push(n.id.as_str());
        }
        out
    }

    /// Structural problems: parent cycles (errors), meters with no transformer above them
    /// and meters whose site/feeder differ from their transformer's (warnings).
    /// Unknown parents are reported by the config validator, which knows the key paths.
    pub fn problems(&self, index_of: &HashMap<&str, usize>) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut in_cycle: BTreeSet<String> = BTreeSet::new();
        for id in &self.order {
            // A device that is its own parent is reported by the config validator.
            let own = self.nodes.get(id).and_then(|n| n.parent.as_ref()) == Some(id);
            if in_cycle.contains(id) || own {
                continue;
            }
            // Walk up; meeting `id` again means it sits on a cycle.
            let mut path = vec![id.clone()];
            let mut cur = self.nodes.get(id).and_then(|n| n.parent.clone());
            while let Some(p) = cur {
                if &p == id {
                    in_cycle.extend(path.iter().cloned());
                    out.push(Problem {
                        index: index_of.get(id.as_str()).copied(),
                        key: "parent",
                        message: format!("parent cycle: {} -> {id}", path.join(" -> ")),
                        fatal: true,
                    });
                    break;
                }
                if path.contains(&p) || path.len() > self.nodes.len() {
                    break;
                }
                path.push(p.clone());
                cur = self.nodes.get(&p).and_then(|n| n.parent.clone());
            }
        }
        for n in self.nodes() {
            if n.kind != METER || in_cycle.contains(&n.id) {
                continue;
            }
            let index = index_of.get(n.id.as_str()).copied();
            match self.transformer_of(&n.id).and_then(|t| self.nodes.get(t)) {
                None => out.push(Problem {
                    index,
                    key: "parent",
                    message: format!(
                        "meter {:?} has no transformer above it: it is left out of transformer \
                         KPIs and fault localisation",
                        n.id
                    ),
                    fatal: false,
                }),
                Some(t) if t.site != n.site || t.feeder != n.feeder => out.push(Problem {
                    index,
                    key: "feeder",
                    message: format!(
                        "meter {:?} is on {}/{} but its transformer {:?} is on {}/{}",
                        n.id, n.site, n.feeder, t.id, t.site, t.feeder
                    ),
                    fatal: false,
                }),
                Some(_) => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, kind: &str, feeder: &str, parent: Option<&str>) -> Node {
        Node::new(id, kind, "S1", feeder, parent)
    }

    fn sample() -> Topology {
        let mut t = Topology::default();
        // A child before its parent: insert must link it anyway.
        t.insert(node("M1", METER, "F1", Some("T1")));
        t.insert(node("T1", TRANSFORMER, "F1", None));
        t.insert(node("M2", METER, "F1", Some("T1")));
        let mut m3 = node("M3", METER, "F1", Some("T1"));
        m3.customers = 4;
        t.insert(m3);
        t.insert(node("T2", TRANSFORMER, "F1", None));
        t.insert(node("M4", METER, "F1", Some("T2")));
        t
    }

    #[test]
    fn from_devices_links_as_inserting_one_by_one_does() {
        // Children before parents, a parent that is not configured, a disabled device and a
        // repeated id whose second entry moves it to another transformer.
        let toml = r#"
            [[devices]]
            id = "M1"
            kind = "meter"
            parent = "T1"
            [[devices]]
            id = "M2"
            kind = "meter"
            parent = "T1"
            customers = 3
            [[devices]]
            id = "T1"
            kind = "transformer"
            [[devices]]
            id = "M3"
            kind = "meter"
            parent = "T9"
            [[devices]]
            id = "M4"
            kind = "meter"
            parent = "T2"
            enabled = false
            [[devices]]
            id = "T2"
            kind = "transformer"
            [[devices]]
            id = "M1"
            kind = "meter"
            parent = "T2"
        "#;
        #[derive(serde::Deserialize)]
        struct Devices {
            devices: Vec<DeviceConfig>,
        }
        let Devices { devices } = toml::from_str(toml).unwrap();
        let built = Topology::from_devices(&devices);
        let mut one_by_one = Topology::default();
        for d in devices.iter().filter(|d| d.enabled) {
            one_by_one.insert(Node {
                customers: d.customers,
                phase: d.phase,
                location: d.location.clone(),
                ..Node::new(&d.id, &d.kind, &d.site, &d.feeder, d.parent.as_deref())
            });
        }
        assert_eq!(built.order, one_by_one.order);
        assert_eq!(built.nodes, one_by_one.nodes);
        assert_eq!(built.get("T1").unwrap().children, ["M2"]);
        assert_eq!(built.get("T2").unwrap().children, ["M1"]);
        assert_eq!(built.get("M2").unwrap().customers, 3);
    }

    #[test]
    fn walks_up_and_down() {
        let t = sample();
        assert_eq!(t.transformer_of("M1"), Some("T1"));
        assert_eq!(t.transformer_of("T2"), Some("T2"));
        let ids: Vec<&str> = t.meters_under("T1").iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["M1", "M2", "M3"]);
        assert_eq!(t.customers_under("T1"), 6);
        assert_eq!(t.customers_under("M4"), 1);
        let f = t.feeder_of("M1").expect("feeder");
        let tx: Vec<&str> = t
            .transformers_on(&f)
            .iter()
            .map(|n| n.id.as_str())
            .collect();
        assert_eq!(tx, ["T1", "T2"]);
        assert_eq!(t.meters_on(&f).len(), 4);
    }

    #[test]
    fn reports_cycles_and_orphans() {
        let mut t = sample();
        t.insert(node("X", METER, "F1", Some("Y")));
        t.insert(node("Y", METER, "F1", Some("X")));
        t.insert(node("M9", METER, "F2", None));
        t.insert(node("M8", METER, "F9", Some("T2")));
        let idx: HashMap<&str, usize> = HashMap::from([("X", 6), ("M9", 8)]);
        let p = t.problems(&idx);
        let fatal: Vec<&Problem> = p.iter().filter(|p| p.fatal).collect();
        assert_eq!(fatal.len(), 1, "{p:?}");
        assert_eq!(fatal[0].index, Some(6));
        assert!(
            fatal[0].message.contains("X -> Y -> X"),
            "{}",
            fatal[0].message
        );
        let warn: Vec<&str> = p
            .iter()
            .filter(|p| !p.fatal)
            .map(|p| p.message.as_str())
            .collect();
        assert_eq!(warn.len(), 2, "{warn:?}");
        assert!(warn.iter().any(|w| w.contains("\"M9\" has no transformer")));
        assert!(warn.iter().any(|w| w.contains("\"M8\" is on S1/F9")));
        // The walk stops on the cycle instead of looping.
        assert_eq!(t.transformer_of("X"), None);
        assert!(t.descendants("X").iter().any(|n| n.id == "Y"));
    }
}
