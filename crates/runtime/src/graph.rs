//! The dependency graph: validation (unknown dependencies, cycles with their path), start layers, and
//! the transitive closures that start and stop commands walk.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use crate::{Priority, ServiceName, Spec};

/// A validated, acyclic dependency graph. Indices follow the order the specs were given in.
#[derive(Debug, Clone)]
pub struct Graph {
    names: Vec<ServiceName>,
    priorities: Vec<Priority>,
    index: HashMap<ServiceName, usize>,
    deps: Vec<Vec<usize>>,
    dependents: Vec<Vec<usize>>,
    layer: Vec<usize>,
}

/// One reason a set of services cannot form a graph.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// Two services have the same name.
    #[error("service {0} is registered twice")]
    Duplicate(ServiceName),
    /// A dependency that is not registered.
    #[error("service {service} depends on {dependency}, which is not registered")]
    UnknownDependency {
        /// The service that depends on it.
        service: ServiceName,
        /// The dependency.
        dependency: ServiceName,
    },
    /// A dependency that is switched off.
    #[error(
        "service {service} depends on {dependency}, which is disabled: enable {dependency} or disable {service}"
    )]
    DisabledDependency {
        /// The service that depends on it.
        service: ServiceName,
        /// The dependency.
        dependency: ServiceName,
    },
    /// Services that depend on each other, in order, the first repeated at the end.
    #[error("dependency cycle: {}", CyclePath(.0))]
    Cycle(Vec<ServiceName>),
}

struct CyclePath<'a>(&'a [ServiceName]);

impl fmt::Display for CyclePath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for name in self.0 {
            write!(f, "{name} -> ")?;
        }
        match self.0.first() {
            Some(first) => write!(f, "{first}"),
            None => Ok(()),
        }
    }
}

impl Graph {
    /// Builds the graph of `specs`, reporting every problem found. `disabled` names services that exist
    /// but are switched off, so that depending on one is reported as such rather than as unknown.
    pub fn build<'a>(
        specs: impl IntoIterator<Item = &'a Spec>,
        disabled: &BTreeSet<ServiceName>,
    ) -> Result<Graph, Vec<GraphError>> {
        let specs: Vec<&Spec> = specs.into_iter().collect();
        let mut problems = Vec::new();
        let mut index = HashMap::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            if index.insert(spec.name.clone(), i).is_some() {
                problems.push(GraphError::Duplicate(spec.name.clone()));
            }
        }
        let mut deps = vec![Vec::new(); specs.len()];
        let mut dependents = vec![Vec::new(); specs.len()];
        for (i, spec) in specs.iter().enumerate() {
            for dep in &spec.dependencies {
                match index.get(dep) {
                    Some(&j) => {
                        if !deps[i].contains(&j) {
                            deps[i].push(j);
                            dependents[j].push(i);
                        }
                    }
                    None if disabled.contains(dep) => {
                        problems.push(GraphError::DisabledDependency {
                            service: spec.name.clone(),
                            dependency: dep.clone(),
                        })
                    }
                    None => problems.push(GraphError::UnknownDependency {
                        service: spec.name.clone(),
                        dependency: dep.clone(),
                    }),
                }
            }
        }
        let names: Vec<ServiceName> = specs.iter().map(|s| s.name.clone()).collect();
        problems.extend(
            find_cycles(&names, &deps)
                .into_iter()
                .map(GraphError::Cycle),
        );
        if !problems.is_empty() {
            return Err(problems);
        }
        let layer = layers_of(&deps);
        Ok(Graph {
            priorities: specs.iter().map(|s| s.priority).collect(),
            names,
            index,
            deps,
            dependents,
            layer,
        })
    }

    /// How many services it holds.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether it holds no service.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The index of the service named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The name of service `i`.
    pub fn name(&self, i: usize) -> &ServiceName {
        &self.names[i]
    }

    /// The direct dependencies of service `i`.
    pub fn dependencies(&self, i: usize) -> &[usize] {
        &self.deps[i]
    }

    /// The services that depend directly on service `i`.
    pub fn dependents(&self, i: usize) -> &[usize] {
        &self.dependents[i]
    }

    /// The start layer of service `i`: 0 for services without dependencies, else one more than the
    /// highest layer among its dependencies.
    pub fn layer(&self, i: usize) -> usize {
        self.layer[i]
    }

    /// Services grouped by start layer; within a layer, higher priority first, then by name.
    pub fn layers(&self) -> Vec<Vec<ServiceName>> {
        let depth = self.layer.iter().copied().max().map_or(0, |m| m + 1);
        let mut layers: Vec<Vec<usize>> = vec![Vec::new(); depth];
        for (i, &l) in self.layer.iter().enumerate() {
            layers[l].push(i);
        }
        layers
            .into_iter()
            .map(|mut l| {
                l.sort_by(|&a, &b| {
                    self.priorities[a]
                        .cmp(&self.priorities[b])
                        .then_with(|| self.names[a].cmp(&self.names[b]))
                });
                l.into_iter().map(|i| self.names[i].clone()).collect()
            })
            .collect()
    }

    /// `i` and everything it depends on, directly or not.
    pub fn with_dependencies(&self, i: usize) -> BTreeSet<usize> {
        closure(i, &self.deps)
    }

    /// `i` and everything that depends on it, directly or not.
    pub fn with_dependents(&self, i: usize) -> BTreeSet<usize> {
        closure(i, &self.dependents)
    }

    /// Edges as `(dependent, dependency)` name pairs.
    pub fn edges(&self) -> Vec<(ServiceName, ServiceName)> {
        let mut edges = Vec::new();
        for (i, ds) in self.deps.iter().enumerate() {
            for &d in ds {
                edges.push((self.names[i].clone(), self.names[d].clone()));
            }
        }
        edges
    }
}

fn closure(start: usize, adjacency: &[Vec<usize>]) -> BTreeSet<usize> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![start];
    while let Some(i) = stack.pop() {
        if seen.insert(i) {
            stack.extend(adjacency[i].iter().copied());
        }
    }
    seen
}

/// Longest-path layering; assumes an acyclic graph.
fn layers_of(deps: &[Vec<usize>]) -> Vec<usize> {
    const UNSET: usize = usize::MAX;
    let mut layer = vec![UNSET; deps.len()];
    for root in 0..deps.len() {
        // Iterative post-order so deep chains do not overflow the stack.
        let mut stack = vec![(root, 0usize)];
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if layer[node] != UNSET {
                stack.pop();
                continue;
            }
            if let Some(&d) = deps[node].get(*next) {
                *next += 1;
                if layer[d] == UNSET {
                    stack.push((d, 0));
                }
            } else {
                layer[node] = deps[node].iter().map(|&d| layer[d] + 1).max().unwrap_or(0);
                stack.pop();
            }
        }
    }
    layer
}

/// Every elementary cycle reached through a back edge of a depth-first search, each reported once,
/// rotated to start at its smallest name.
fn find_cycles(names: &[ServiceName], deps: &[Vec<usize>]) -> Vec<Vec<ServiceName>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Color {
        White,
        Grey,
        Black,
    }
    let mut color = vec![Color::White; deps.len()];
    let mut found: BTreeSet<Vec<ServiceName>> = BTreeSet::new();
    for root in 0..deps.len() {
        if color[root] != Color::White {
            continue;
        }
        let mut path: Vec<usize> = Vec::new();
        let mut stack = vec![(root, 0usize)];
        color[root] = Color::Grey;
        path.push(root);
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&d) = deps[node].get(*next) {
                *next += 1;
                match color[d] {
                    Color::White => {
                        color[d] = Color::Grey;
                        path.push(d);
                        stack.push((d, 0));
                    }
                    Color::Grey => {
                        let start = path.iter().rposition(|&p| p == d).unwrap_or(0);
                        let mut cycle: Vec<ServiceName> =
                            path[start..].iter().map(|&i| names[i].clone()).collect();
                        let min = cycle
                            .iter()
                            .enumerate()
                            .min_by(|a, b| a.1.cmp(b.1))
                            .map_or(0, |(i, _)| i);
                        cycle.rotate_left(min);
                        found.insert(cycle);
                    }
                    Color::Black => {}
                }
            } else {
                color[node] = Color::Black;
                path.pop();
                stack.pop();
            }
        }
    }
    found.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kind;
    use proptest::prelude::*;

    fn name(s: &str) -> ServiceName {
        ServiceName::new(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn specs(edges: &[(&str, &[&str])]) -> Vec<Spec> {
        edges
            .iter()
            .map(|(n, deps)| {
                let mut spec = Spec::new(name(n), Kind::Core);
                spec.dependencies = deps.iter().map(|d| name(d)).collect();
                spec
            })
            .collect()
    }

    fn check(edges: &[(&str, &[&str])], expected: Result<&[&[&str]], &[&str]>) {
        let specs = specs(edges);
        let got = Graph::build(&specs, &BTreeSet::new());
        match (got, expected) {
            (Ok(g), Ok(layers)) => {
                let got: Vec<Vec<String>> = g
                    .layers()
                    .into_iter()
                    .map(|l| l.into_iter().map(|n| n.to_string()).collect())
                    .collect();
                let want: Vec<Vec<String>> = layers
                    .iter()
                    .map(|l| l.iter().map(|s| s.to_string()).collect())
                    .collect();
                assert_eq!(got, want);
            }
            (Err(problems), Err(messages)) => {
                let got: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
                assert_eq!(
                    got,
                    messages.iter().map(|s| s.to_string()).collect::<Vec<_>>()
                );
            }
            (got, want) => panic!("got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn layers_and_errors() {
        check(&[], Ok(&[]));
        check(
            &[
                ("crypto", &[]),
                ("storage", &["crypto"]),
                ("account", &["crypto", "storage"]),
                ("computation", &["crypto", "storage"]),
                ("ai", &["computation", "storage"]),
            ],
            Ok(&[
                &["crypto"],
                &["storage"],
                &["account", "computation"],
                &["ai"],
            ]),
        );
        check(
            &[("a", &["b"]), ("b", &["c"]), ("c", &["a"])],
            Err(&["dependency cycle: a -> b -> c -> a"]),
        );
        check(&[("a", &["a"])], Err(&["dependency cycle: a -> a"]));
        check(
            &[("a", &["x"]), ("b", &["y"])],
            Err(&[
                "service a depends on x, which is not registered",
                "service b depends on y, which is not registered",
            ]),
        );
        check(
            &[("a", &[]), ("a", &[])],
            Err(&["service a is registered twice"]),
        );
    }

    #[test]
    fn priority_orders_within_a_layer() {
        let mut s = specs(&[("low", &[]), ("crit", &[]), ("mid", &[])]);
        s[0].priority = Priority::Low;
        s[1].priority = Priority::Critical;
        let g = Graph::build(&s, &BTreeSet::new()).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            g.layers(),
            vec![vec![name("crit"), name("mid"), name("low")]]
        );
    }

    #[test]
    fn disabled_dependency_names_both() {
        let s = specs(&[("ai", &["oracle"])]);
        let disabled: BTreeSet<_> = [name("oracle")].into();
        let err = Graph::build(&s, &disabled).err().unwrap_or_default();
        assert_eq!(
            err.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            ["service ai depends on oracle, which is disabled: enable oracle or disable ai"]
        );
    }

    /// A random graph over `n` nodes: edge i -> j for some pairs, possibly in both directions.
    fn arb_graph() -> impl Strategy<Value = Vec<Vec<usize>>> {
        (1usize..12)
            .prop_flat_map(|n| proptest::collection::vec(proptest::collection::vec(0..n, 0..4), n))
    }

    fn to_specs(adj: &[Vec<usize>]) -> Vec<Spec> {
        adj.iter()
            .enumerate()
            .map(|(i, ds)| {
                let mut spec = Spec::new(name(&format!("s{i}")), Kind::Core);
                let mut seen = BTreeSet::new();
                for &d in ds {
                    if seen.insert(d) {
                        spec.dependencies.push(name(&format!("s{d}")));
                    }
                }
                spec
            })
            .collect()
    }

    fn has_cycle(adj: &[Vec<usize>]) -> bool {
        // Kahn's algorithm as an independent oracle.
        let n = adj.len();
        let mut indeg = vec![0; n];
        for ds in adj {
            let uniq: BTreeSet<_> = ds.iter().collect();
            for &&d in &uniq {
                indeg[d] += 1;
            }
        }
        let mut queue: Vec<usize> = (0..n).filter(|&i| indeg[i] == 0).collect();
        let mut seen = 0;
        while let Some(i) = queue.pop() {
            seen += 1;
            let uniq: BTreeSet<_> = adj[i].iter().collect();
            for &&d in &uniq {
                indeg[d] -= 1;
                if indeg[d] == 0 {
                    queue.push(d);
                }
            }
        }
        seen != n
    }

    proptest! {
        #[test]
        fn every_dependency_starts_in_an_earlier_layer(adj in arb_graph()) {
            let specs = to_specs(&adj);
            match Graph::build(&specs, &BTreeSet::new()) {
                Ok(g) => {
                    prop_assert!(!has_cycle(&adj));
                    for i in 0..g.len() {
                        for &d in g.dependencies(i) {
                            prop_assert!(g.layer(d) < g.layer(i));
                        }
                    }
                    let flat: Vec<_> = g.layers().into_iter().flatten().collect();
                    prop_assert_eq!(flat.len(), g.len());
                }
                Err(problems) => {
                    prop_assert!(has_cycle(&adj));
                    for p in &problems {
                        // Every reported cycle is a real path in the graph that closes on itself.
                        let GraphError::Cycle(path) = p else { panic!("unexpected {p}") };
                        prop_assert!(!path.is_empty());
                        for k in 0..path.len() {
                            let from = &specs.iter().find(|s| s.name == path[k]).map(|s| s.dependencies.clone()).unwrap_or_default();
                            prop_assert!(from.contains(&path[(k + 1) % path.len()]));
                        }
                    }
                }
            }
        }
    }
}
