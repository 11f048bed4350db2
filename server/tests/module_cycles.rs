//! No import circles: within every crate of `server/` and `plugin-abi/`, the modules that
//! share a parent must depend on each other without a cycle (a parent's own file is the hub
//! its children may use, and it may use them; siblings may not lean on each other both
//! ways, directly or around a loop).
//!
//! The check reads the sources, not the compiler's view: each crate's module tree is
//! followed from its root through `mod` declarations (test-only modules are left out), and
//! every path a module names (`use` trees, `crate::`/`super::`/`self::` paths, paths through
//! a child module or an imported name, inside macro calls too) is resolved through the
//! names each module imports, re-exports included, to the module that defines it.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    str::FromStr,
};

use proc_macro2::{Delimiter, TokenStream, TokenTree};

/// A module's path from its crate root (`[]` is the root).
type ModPath = Vec<String>;

/// One module: where it is and what it names.
#[derive(Debug, Default)]
struct Module {
    file: PathBuf,
    /// Child modules declared in it (test-only ones left out).
    children: BTreeSet<String>,
    /// Names its `use` declarations bind, to the absolute path they name.
    bindings: BTreeMap<String, Vec<String>>,
    /// Every path it names, as written (first segment possibly `crate`, `super`, `self`,
    /// a child or a binding), resolved later.
    paths: Vec<Vec<String>>,
}

/// A crate's modules by path.
#[derive(Debug, Default)]
struct Crate {
    modules: BTreeMap<ModPath, Module>,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("server/ has a parent")
        .to_owned()
}

impl Crate {
    /// Reads the crate whose root file is `root`.
    fn read(root: &Path) -> Crate {
        let mut krate = Crate::default();
        let dir = root
            .parent()
            .expect("a root file has a directory")
            .to_owned();
        krate.read_file(Vec::new(), root, dir);
        krate
    }

    /// Reads module `path` from `file`; its file children live in `child_dir`.
    fn read_file(&mut self, path: ModPath, file: &Path, child_dir: PathBuf) {
        let source = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        let tokens = TokenStream::from_str(&source)
            .unwrap_or_else(|e| panic!("tokenizing {}: {e:?}", file.display()));
        self.read_module(path, file, child_dir, tokens);
    }

    /// Reads module `path` (`tokens`, from `file`), then its children.
    fn read_module(&mut self, path: ModPath, file: &Path, child_dir: PathBuf, tokens: TokenStream) {
        let mut children = Vec::new();
        self.read_tokens(&path, file, tokens, &mut children);
        for (child, body) in children {
            let child_path = [path.clone(), vec![child.clone()]].concat();
            match body {
                Some(body) => self.read_module(child_path, file, child_dir.join(&child), body),
                None => {
                    let flat = child_dir.join(format!("{child}.rs"));
                    let child_file = if flat.is_file() {
                        flat
                    } else {
                        child_dir.join(&child).join("mod.rs")
                    };
                    assert!(child_file.is_file(), "no file for module {child_path:?}");
                    self.read_file(child_path, &child_file, child_dir.join(&child));
                }
            }
        }
    }

    /// Reads the items of module `path` from `tokens`; child modules are pushed to
    /// `pending` (with their body when inline).
    fn read_tokens(
        &mut self,
        path: &ModPath,
        file: &Path,
        tokens: TokenStream,
        pending: &mut Vec<(String, Option<TokenStream>)>,
    ) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let module = self.modules.entry(path.clone()).or_default();
        if module.file.as_os_str().is_empty() {
            module.file = file.to_owned();
        }
        let mut test_only = false;
        let mut i = 0;
        while i < tokens.len() {
            match &tokens[i] {
                // An attribute: remember whether it makes the next item test-only.
                TokenTree::Punct(p) if p.as_char() == '#' => {
                    if let Some(TokenTree::Group(g)) = tokens.get(i + 1)
                        && g.delimiter() == Delimiter::Bracket
                    {
                        let text = g.stream().to_string().replace(' ', "");
                        test_only |= text == "cfg(test)";
                        i += 2;
                        continue;
                    }
                    i += 1;
                }
                TokenTree::Ident(id) if id == "pub" => {
                    // `pub(crate)` and friends keep the attributes for the item that follows.
                    i += 1;
                    if let Some(TokenTree::Group(g)) = tokens.get(i)
                        && g.delimiter() == Delimiter::Parenthesis
                    {
                        i += 1;
                    }
                }
                TokenTree::Ident(id) if id == "mod" => {
                    let Some(TokenTree::Ident(name)) = tokens.get(i + 1) else {
                        i += 1;
                        continue;
                    };
                    let name = name.to_string();
                    let body = match tokens.get(i + 2) {
                        Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace => {
                            Some(g.stream())
                        }
                        _ => None,
                    };
                    if !test_only {
                        self.modules
                            .get_mut(path)
                            .expect("entered above")
                            .children
                            .insert(name.clone());
                        pending.push((name, body));
                    }
                    test_only = false;
                    i += 3;
                }
                TokenTree::Ident(id) if id == "use" => {
                    let end = (i + 1..tokens.len())
                        .find(|&j| matches!(&tokens[j], TokenTree::Punct(p) if p.as_char() == ';'))
                        .unwrap_or(tokens.len());
                    if !test_only {
                        let mut bound = Vec::new();
                        use_tree(&tokens[i + 1..end], Vec::new(), &mut bound);
                        let module = self.modules.get_mut(path).expect("entered above");
                        for (name, target) in bound {
                            module.paths.push(target.clone());
                            if let Some(name) = name {
                                module.bindings.insert(name, target);
                            }
                        }
                    }
                    test_only = false;
                    i = end + 1;
                }
                _ => {
                    if !test_only {
                        let mut found = Vec::new();
                        paths_at(&tokens, i, &mut found);
                        self.modules
                            .get_mut(path)
                            .expect("entered above")
                            .paths
                            .extend(found);
                    }
                    // Attributes apply to the next item only; an item ends at `;` or a
                    // brace group.
                    if matches!(&tokens[i], TokenTree::Punct(p) if p.as_char() == ';')
                        || matches!(&tokens[i], TokenTree::Group(g) if g.delimiter() == Delimiter::Brace)
                    {
                        test_only = false;
                    }
                    i += 1;
                }
            }
        }
    }

    /// The absolute form of `written`, named in module `from`: `None` for paths outside
    /// the crate.
    fn absolute(&self, from: &ModPath, written: &[String]) -> Option<Vec<String>> {
        let mut base = from.clone();
        let mut rest = written;
        match rest.first()?.as_str() {
            "crate" => {
                base.clear();
                rest = &rest[1..];
            }
            "self" => rest = &rest[1..],
            "super" => {
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop()?;
                    rest = &rest[1..];
                }
            }
            first => {
                let module = self.modules.get(from)?;
                if module.children.contains(first) {
                    // A child module: relative to `from`.
                } else if let Some(target) = module.bindings.get(first) {
                    return Some([target.clone(), rest[1..].to_vec()].concat());
                } else {
                    return None;
                }
            }
        }
        Some([base, rest.to_vec()].concat())
    }

    /// The module that defines what `path` (absolute) names, following imports and
    /// re-exports.
    fn defining_module(&self, path: &[String]) -> Option<ModPath> {
        let mut path = path.to_vec();
        for _ in 0..16 {
            let depth = (0..=path.len())
                .rev()
                .find(|&n| self.modules.contains_key(&path[..n]))?;
            let module = &path[..depth];
            let Some(name) = path.get(depth) else {
                return Some(module.to_vec());
            };
            match self.modules[module].bindings.get(name) {
                Some(target) if target.first().map(String::as_str) != Some("crate") => {
                    // A binding written relative to its module; make it absolute.
                    let target = self.absolute(&module.to_vec(), target)?;
                    path = [target, path[depth + 1..].to_vec()].concat();
                }
                Some(target) => {
                    path = [target[1..].to_vec(), path[depth + 1..].to_vec()].concat();
                }
                None => return Some(module.to_vec()),
            }
        }
        None
    }

    /// Sibling dependencies: for each parent, which child depends on which, with a path
    /// that shows it.
    fn sibling_edges(&self) -> BTreeMap<ModPath, BTreeMap<(String, String), String>> {
        let mut edges: BTreeMap<ModPath, BTreeMap<(String, String), String>> = BTreeMap::new();
        for (from, module) in &self.modules {
            for written in &module.paths {
                let Some(absolute) = self.absolute(from, written) else {
                    continue;
                };
                let Some(to) = self.defining_module(&absolute) else {
                    continue;
                };
                let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
                if common == from.len() || common == to.len() {
                    continue; // one is the other's ancestor: the parent is the hub
                }
                edges
                    .entry(from[..common].to_vec())
                    .or_default()
                    .entry((from[common].clone(), to[common].clone()))
                    .or_insert_with(|| {
                        format!("{} names {}", module.file.display(), written.join("::"))
                    });
            }
        }
        edges
    }
}

/// Expands a `use` tree (tokens after `use`, up to `;`) under `prefix`: each leaf's bound
/// name (`None` for globs and `self` bindings of `_`) and the path it names.
fn use_tree(
    tokens: &[TokenTree],
    prefix: Vec<String>,
    out: &mut Vec<(Option<String>, Vec<String>)>,
) {
    let mut path = prefix;
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            TokenTree::Ident(id) if id == "as" => {
                let alias = tokens.get(i + 1).map(|t| t.to_string());
                let alias = alias.filter(|a| a != "_");
                out.push((alias, path.clone()));
                return;
            }
            TokenTree::Ident(id) => {
                let id = id.to_string();
                if id == "self" && !path.is_empty() {
                    // `a::{self}` binds `a`.
                } else {
                    path.push(id);
                }
            }
            TokenTree::Punct(p) if p.as_char() == '*' => {
                out.push((None, path.clone()));
                return;
            }
            TokenTree::Punct(_) => {} // `::`, a leading `::`
            TokenTree::Group(g) if g.delimiter() == Delimiter::Brace => {
                let inner: Vec<TokenTree> = g.stream().into_iter().collect();
                for part in inner.split(|t| matches!(t, TokenTree::Punct(p) if p.as_char() == ','))
                {
                    if !part.is_empty() {
                        use_tree(part, path.clone(), out);
                    }
                }
                return;
            }
            _ => {}
        }
        i += 1;
    }
    if let Some(last) = path.last() {
        out.push((Some(last.clone()), path.clone()));
    }
}

/// The path that starts at `tokens[i]` (unless `tokens[i]` continues one), and every
/// path inside it if it is a group.
fn paths_at(tokens: &[TokenTree], i: usize, out: &mut Vec<Vec<String>>) {
    let continues = i >= 2
        && matches!((&tokens[i - 2], &tokens[i - 1]),
            (TokenTree::Punct(a), TokenTree::Punct(b)) if a.as_char() == ':' && b.as_char() == ':');
    if !continues && let Some(p) = path_at(&tokens[i..]) {
        out.push(p);
    }
    if let TokenTree::Group(g) = &tokens[i] {
        let inner: Vec<TokenTree> = g.stream().into_iter().collect();
        for j in 0..inner.len() {
            paths_at(&inner, j, out);
        }
    }
}

/// The path starting at `tokens[0]`, if it is an ident followed by `::` (and not itself
/// the tail of a longer path).
fn path_at(tokens: &[TokenTree]) -> Option<Vec<String>> {
    let TokenTree::Ident(first) = tokens.first()? else {
        return None;
    };
    let mut segments = vec![first.to_string()];
    let mut i = 1;
    loop {
        let colons = matches!(
            (tokens.get(i), tokens.get(i + 1)),
            (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
                if a.as_char() == ':' && b.as_char() == ':'
        );
        if !colons {
            break;
        }
        match tokens.get(i + 2) {
            Some(TokenTree::Ident(next)) => {
                segments.push(next.to_string());
                i += 3;
            }
            _ => break,
        }
    }
    (segments.len() > 1).then_some(segments)
}

/// The cycles among one parent's children, each as the loop of children with evidence.
fn cycles(edges: &BTreeMap<(String, String), String>) -> Vec<String> {
    let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        graph.entry(from).or_default().push(to);
    }
    let mut found = Vec::new();
    // Depth-first search from every node, reporting a loop back to the start once.
    let mut reported: BTreeSet<BTreeSet<&str>> = BTreeSet::new();
    for &start in graph.keys() {
        let mut stack = vec![(start, vec![start])];
        let mut seen = BTreeSet::new();
        while let Some((node, trail)) = stack.pop() {
            for &next in graph.get(node).into_iter().flatten() {
                if next == start {
                    let members: BTreeSet<&str> = trail.iter().copied().collect();
                    if reported.insert(members) {
                        let mut steps = Vec::new();
                        let mut loop_ = trail.clone();
                        loop_.push(start);
                        for pair in loop_.windows(2) {
                            let why = &edges[&(pair[0].to_owned(), pair[1].to_owned())];
                            steps.push(format!("{} -> {} ({why})", pair[0], pair[1]));
                        }
                        found.push(steps.join("; "));
                    }
                } else if seen.insert(next) {
                    let mut trail = trail.clone();
                    trail.push(next);
                    stack.push((next, trail));
                }
            }
        }
    }
    found
}

/// Every crate root under `server/` and `plugin-abi/`.
fn crate_roots() -> Vec<PathBuf> {
    let root = repo_root();
    [
        "server/src/lib.rs",
        "server/src/main.rs",
        "server/protocol/src/lib.rs",
        "plugin-abi/src/lib.rs",
        "plugin-abi/abi/src/lib.rs",
        "plugin-abi/macros/src/lib.rs",
        "plugin-abi/testkit/src/lib.rs",
    ]
    .iter()
    .map(|p| root.join(p))
    .collect()
}

#[test]
fn no_module_depends_on_a_sibling_that_depends_back_on_it() {
    let mut problems = Vec::new();
    for root in crate_roots() {
        let krate = Crate::read(&root);
        for (parent, edges) in krate.sibling_edges() {
            for cycle in cycles(&edges) {
                problems.push(format!(
                    "{} in crate::{}: {cycle}",
                    root.display(),
                    parent.join("::")
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "import circles:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_check_reads_every_module_and_sees_dependencies() {
    let root = repo_root();
    let server = Crate::read(&root.join("server/src/lib.rs"));
    for module in [
        &["daemon", "events"][..],
        &["rpc", "step"],
        &["lifecycle", "reload"],
    ] {
        let path: ModPath = module.iter().map(|s| s.to_string()).collect();
        assert!(server.modules.contains_key(&path), "{module:?} not found");
    }
    assert!(
        !server
            .modules
            .keys()
            .any(|m| m.last().is_some_and(|s| s == "tests")),
        "test modules are left out"
    );
    let edges = server.sibling_edges();
    let top = &edges[&Vec::new()];
    // rpc uses the daemon's operations (through a re-export); the daemon's events use
    // the metrics; both must be seen for the check to mean anything.
    assert!(
        top.contains_key(&("rpc".into(), "daemon".into())),
        "{top:?}"
    );
    assert!(
        top.contains_key(&("daemon".into(), "metrics".into())),
        "{top:?}"
    );
    let daemon = &edges[&vec!["daemon".to_owned()]];
    // events.rs: `use super::{.., Scope, ..}`, re-exported from plugins.
    assert!(
        daemon.contains_key(&("events".into(), "plugins".into())),
        "{daemon:?}"
    );
}

#[test]
fn a_circle_is_reported_with_its_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\nmod c;\n").unwrap();
    std::fs::write(src.join("a.rs"), "use crate::b::B;\npub struct A;\n").unwrap();
    std::fs::write(src.join("b.rs"), "pub struct B(super::c::C);\n").unwrap();
    std::fs::write(
        src.join("c.rs"),
        "pub struct C;\nfn f() { tracing::info!(\"{:?}\", crate::a::A); }\n",
    )
    .unwrap();
    let krate = Crate::read(&src.join("lib.rs"));
    let edges = krate.sibling_edges();
    let found = cycles(&edges[&Vec::new()]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("a -> b") && found[0].contains("c -> a"),
        "{found:?}"
    );
}
