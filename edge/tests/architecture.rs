//! The edge's module structure, checked from its sources: the top-level modules of `src/`
//! (`cache`, `config`, `origin`, `proxy`, `server`, `state`, `upload`, ...) depend on each other in
//! one direction only, so no two of them import each other, directly or around a circle.
//!
//! Every `use` and every path starting with `crate::`, `super::` or `self::` outside
//! `#[cfg(test)]` code is resolved to the top-level module it names; the graph of those edges must
//! have no cycle. A failure lists the cycle and the file and path behind each of its edges.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use syn::visit::Visit;

/// An edge between two top-level modules and where it comes from.
#[derive(Debug, Clone)]
struct Use {
    file: PathBuf,
    path: String,
}

/// The module path of a source file: `src/cache/mod.rs` is `[cache]`, `src/cache/key.rs` is
/// `[cache, key]`, `src/main.rs` is the crate root.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "main")) {
        parts.pop();
    }
    parts
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

/// Collects the absolute module paths a file refers to.
struct Collector {
    module: Vec<String>,
    found: Vec<Vec<String>>,
}

impl Collector {
    fn resolve(&self, segments: &[String]) -> Option<Vec<String>> {
        let mut base = match segments.first().map(String::as_str) {
            Some("crate") => Vec::new(),
            Some("super") => {
                let mut m = self.module.clone();
                m.pop();
                m
            }
            Some("self") => self.module.clone(),
            _ => return None,
        };
        let mut rest = &segments[1..];
        while rest.first().map(String::as_str) == Some("super") {
            base.pop();
            rest = &rest[1..];
        }
        base.extend(rest.iter().cloned());
        Some(base)
    }

    fn record(&mut self, segments: Vec<String>) {
        if let Some(path) = self.resolve(&segments) {
            self.found.push(path);
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let mut full = prefix.clone();
                if n.ident != "self" {
                    full.push(n.ident.to_string());
                }
                self.record(full);
            }
            syn::UseTree::Rename(r) => {
                let mut full = prefix.clone();
                full.push(r.ident.to_string());
                self.record(full);
            }
            syn::UseTree::Glob(_) => self.record(prefix.clone()),
            syn::UseTree::Group(g) => {
                for tree in &g.items {
                    self.use_tree(prefix, tree);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Collector {
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        if !is_test_only(&item.attrs) {
            self.use_tree(&mut Vec::new(), &item.tree);
        }
    }

    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        if !is_test_only(&item.attrs) {
            syn::visit::visit_item_mod(self, item);
        }
    }

    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        if !is_test_only(&item.attrs) {
            syn::visit::visit_item_fn(self, item);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        self.record(path.segments.iter().map(|s| s.ident.to_string()).collect());
        syn::visit::visit_path(self, path);
    }
}

/// Top-level module → top-level modules it uses, with one example of each use.
fn graph() -> BTreeMap<String, BTreeMap<String, Use>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeMap<String, Use>> = BTreeMap::new();
    for file in files {
        let module = module_of(&src, &file);
        let Some(top) = module.first().cloned() else {
            continue; // main.rs composes everything; nothing imports it
        };
        let text = std::fs::read_to_string(&file).expect("read source");
        let parsed = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut collector = Collector {
            module,
            found: Vec::new(),
        };
        collector.visit_file(&parsed);
        let uses = graph.entry(top.clone()).or_default();
        for path in collector.found {
            let Some(target) = path.first() else { continue };
            if *target != top && target != "fuzz" {
                uses.entry(target.clone()).or_insert_with(|| Use {
                    file: file.strip_prefix(&src).expect("under src").to_owned(),
                    path: path.join("::"),
                });
            }
        }
    }
    graph
}

/// A cycle in the graph, if any, as the list of modules around it.
fn cycle(graph: &BTreeMap<String, BTreeMap<String, Use>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeMap<String, Use>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flat_map(|m| m.keys()) {
            if let Some(cycle) = visit(next, graph, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn top_level_modules_depend_on_each_other_in_one_direction() {
    let graph = graph();
    // The check must see the modules it is about, or it proves nothing.
    for expected in ["cache", "config", "origin", "proxy", "server", "state", "upload"] {
        assert!(graph.contains_key(expected), "no module {expected} found in src/");
    }
    assert!(
        graph["proxy"].contains_key("cache") && graph["server"].contains_key("proxy"),
        "the collector finds no edges: {graph:#?}"
    );
    // `--nocapture` shows the graph checked.
    for (module, uses) in &graph {
        println!(
            "{module} -> {}",
            uses.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    if let Some(cycle) = cycle(&graph) {
        let edges: Vec<String> = cycle
            .windows(2)
            .map(|w| {
                let used = &graph[&w[0]][&w[1]];
                format!(
                    "  {} -> {}: {} uses {}",
                    w[0],
                    w[1],
                    used.file.display(),
                    used.path
                )
            })
            .collect();
        panic!("modules import each other in a circle:\n{}", edges.join("\n"));
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let edge = |to: &str| {
        (
            to.to_owned(),
            Use {
                file: PathBuf::from("x.rs"),
                path: to.to_owned(),
            },
        )
    };
    let mut graph = BTreeMap::new();
    graph.insert("a".to_owned(), BTreeMap::from([edge("b")]));
    graph.insert("b".to_owned(), BTreeMap::from([edge("c")]));
    graph.insert("c".to_owned(), BTreeMap::new());
    assert_eq!(cycle(&graph), None);
    graph.insert("c".to_owned(), BTreeMap::from([edge("a")]));
    assert_eq!(
        cycle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}
