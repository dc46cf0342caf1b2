//! Nodes of the recipient tree: every country and every UN M49 area in one compact index space,
//! so that a total's key is a few bytes and a roll-up is a walk over a precomputed chain.

use std::sync::LazyLock;

use fundflow_refdata::{COUNTRIES, REGIONS, RegionLevel};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

/// A country (index into `COUNTRIES`) or an M49 area (`COUNTRIES.len()` + index into `REGIONS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Node(u16);

/// A decoded node is checked against the tables, so that no node indexes past them.
impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        Node::from_index(u16::deserialize(d)?)
            .ok_or_else(|| D::Error::custom("a node index is out of range"))
    }
}

/// The level a total is reported at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// One country, keyed by its alpha-3 code.
    Country,
    /// An M49 region (`002` Africa ...).
    Region,
    /// An M49 sub-region (`202` Sub-Saharan Africa ...).
    Subregion,
    /// An M49 intermediate region (`014` Eastern Africa ...).
    Intermediate,
    /// Everything, keyed `001` (World).
    Global,
}

impl Scope {
    /// Every scope, in report order.
    pub const ALL: [Scope; 5] = [
        Scope::Country,
        Scope::Region,
        Scope::Subregion,
        Scope::Intermediate,
        Scope::Global,
    ];

    /// The name used in the API, reports and the model digest.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Country => "country",
            Scope::Region => "region",
            Scope::Subregion => "subregion",
            Scope::Intermediate => "intermediate",
            Scope::Global => "global",
        }
    }

    /// The scope named `name`, the inverse of [`Scope::as_str`].
    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// A node and its ancestors up to World, innermost first; at most country + 3 levels + World.
#[derive(Clone, Copy)]
struct Chain {
    nodes: [Node; 5],
    len: u8,
}

/// Every node's roll-up chain, computed once from the compiled-in tables.
static CHAINS: LazyLock<Vec<Chain>> = LazyLock::new(|| (0..node_count()).map(chain_of).collect());

fn node_count() -> u16 {
    // Both tables are a few hundred entries; the build script guarantees it.
    u16::try_from(COUNTRIES.len() + REGIONS.len()).unwrap_or(u16::MAX)
}

fn chain_of(index: u16) -> Chain {
    let mut chain = Chain {
        nodes: [Node(index); 5],
        len: 1,
    };
    let mut push = |code: u16| {
        if let Some(region) = fundflow_refdata::region_by_code(code) {
            chain.nodes[usize::from(chain.len)] = Node::from_region_index(region);
            chain.len += 1;
        }
    };
    match Node(index).kind() {
        NodeKind::Country(c) => c.ancestors().for_each(&mut push),
        NodeKind::Region(r) => {
            let mut parent = r.parent;
            while let Some(code) = parent {
                push(code);
                parent = fundflow_refdata::region_by_code(code)
                    .and_then(|i| REGIONS[usize::from(i)].parent);
            }
        }
    }
    chain
}

enum NodeKind {
    Country(&'static fundflow_refdata::Country),
    Region(&'static fundflow_refdata::Region),
}

impl Node {
    /// The country with this ISO 3166-1 alpha-3 code.
    pub fn country(alpha3: &str) -> Option<Node> {
        fundflow_refdata::country_by_alpha3(alpha3).map(Node)
    }

    /// The M49 area with this three-digit code (`"014"`, `"001"`).
    pub fn region(key: &str) -> Option<Node> {
        fundflow_refdata::region_by_key(key).map(Node::from_region_index)
    }

    /// The World (`001`), the node of the global total.
    pub fn world() -> Node {
        fundflow_refdata::region_by_code(fundflow_refdata::WORLD)
            .map(Node::from_region_index)
            .unwrap_or(Node(0))
    }

    /// The node of a scope and key as the API names them (`country`/`NPL`, `region`/`142`).
    pub fn from_scope_key(scope: Scope, key: &str) -> Option<Node> {
        let node = match scope {
            Scope::Country => Node::country(key),
            _ => Node::region(key),
        }?;
        (node.scope() == scope).then_some(node)
    }

    fn from_region_index(index: u16) -> Node {
        // COUNTRIES has ~250 entries and REGIONS ~30: the sum always fits.
        Node(index.saturating_add(u16::try_from(COUNTRIES.len()).unwrap_or(0)))
    }

    fn kind(self) -> NodeKind {
        let i = usize::from(self.0);
        match COUNTRIES.get(i) {
            Some(country) => NodeKind::Country(country),
            None => NodeKind::Region(&REGIONS[(i - COUNTRIES.len()).min(REGIONS.len() - 1)]),
        }
    }

    /// The compact index, for keys in maps and stores.
    pub fn index(self) -> u16 {
        self.0
    }

    /// The node with this compact index, if there is one.
    pub fn from_index(index: u16) -> Option<Node> {
        (index < node_count()).then_some(Node(index))
    }

    /// The level this node is reported at.
    pub fn scope(self) -> Scope {
        match self.kind() {
            NodeKind::Country(_) => Scope::Country,
            NodeKind::Region(r) => match r.level {
                RegionLevel::World => Scope::Global,
                RegionLevel::Region => Scope::Region,
                RegionLevel::Subregion => Scope::Subregion,
                RegionLevel::Intermediate => Scope::Intermediate,
            },
        }
    }

    /// The key it is reported under: the alpha-3 code of a country, the M49 code of an area.
    pub fn key(self) -> &'static str {
        match self.kind() {
            NodeKind::Country(c) => c.alpha3,
            NodeKind::Region(r) => r.key,
        }
    }

    /// English name, e.g. `Nepal`, `Eastern Africa`, `World`.
    pub fn name(self) -> &'static str {
        match self.kind() {
            NodeKind::Country(c) => c.name,
            NodeKind::Region(r) => r.name,
        }
    }

    /// This node and every area it rolls up into, innermost first, World last.
    pub fn rollup(self) -> impl Iterator<Item = Node> + Clone {
        let chain = CHAINS
            .get(usize::from(self.0))
            .copied()
            .unwrap_or_else(|| chain_of(self.0));
        chain.nodes.into_iter().take(usize::from(chain.len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(node: Node) -> Vec<&'static str> {
        node.rollup().map(Node::key).collect()
    }

    #[test]
    fn a_country_rolls_up_to_world() {
        assert_eq!(
            keys(Node::country("TZA").unwrap()),
            ["TZA", "014", "202", "002", "001"]
        );
        assert_eq!(
            keys(Node::country("NPL").unwrap()),
            ["NPL", "034", "142", "001"]
        );
    }

    #[test]
    fn an_area_rolls_up_from_itself() {
        assert_eq!(
            keys(Node::region("014").unwrap()),
            ["014", "202", "002", "001"]
        );
        assert_eq!(keys(Node::world()), ["001"]);
    }

    #[test]
    fn scopes_follow_the_m49_level() {
        let scope = |k: &str| Node::region(k).unwrap().scope();
        assert_eq!(Node::country("BRA").unwrap().scope(), Scope::Country);
        assert_eq!(
            [scope("019"), scope("419"), scope("005"), scope("001")],
            [
                Scope::Region,
                Scope::Subregion,
                Scope::Intermediate,
                Scope::Global
            ]
        );
        assert_eq!(Node::from_scope_key(Scope::Region, "014"), None);
        assert_eq!(
            Node::from_scope_key(Scope::Intermediate, "014"),
            Node::region("014")
        );
    }

    #[test]
    fn every_node_round_trips_through_its_index() {
        for i in 0..node_count() {
            let node = Node::from_index(i).unwrap();
            assert_eq!(Node::from_scope_key(node.scope(), node.key()), Some(node));
            assert_eq!(node.rollup().last(), Some(Node::world()));
        }
        assert_eq!(Node::from_index(node_count()), None);
    }
}
