//! Guard: every test of the workspace that touches libtorch's global state holds
//! `ap_testkit::torch_lock()`.
//!
//! # The rule
//!
//! The scan reads every `.rs` file under `crates/*/src`, `crates/*/tests`, `tests/src` and
//! `tests/tests`, with comments, string and char literals blanked, and finds each function
//! marked `#[test]` (also inside `proptest! { … }`; its body is found by brace matching).
//! A body **touches torch** when it names one of [`TOUCHES`] (as a whole identifier or
//! path: seeding, drawing, tch's randomly initialised layers, model building and the
//! library functions that build a model, the thread count), or calls a function of the
//! same file that touches torch (transitively). A function **takes the lock** when its body
//! names `torch_lock` or calls a same-file function that takes it (transitively); a
//! *guard helper* is one that takes it and whose signature names `MutexGuard` (it hands the
//! guard to its caller). A test **holds the lock** when its body names `torch_lock` or calls
//! a guard helper. The scan fails, naming file, line and function, for every test that
//!
//! - names a [`TOUCHES`] entry itself, or calls a same-file helper that touches torch
//!   without taking the lock itself, and does not hold the lock; or
//! - holds the lock and calls a same-file helper (not a guard helper) that takes it again:
//!   `std::sync::Mutex` is not re-entrant, so that test would deadlock.
//!
//! A helper that takes the lock itself (seeds and draws under it, then lets it go) keeps
//! its own draws whole, so calling it needs no lock; anything else the test does with
//! torch does.
//!
//! "Calls" means `name(` or `path::name(` (not a method call `.name(`), matched by name
//! against the functions defined in the same file, whatever their module or impl.
//!
//! # What it does not see
//!
//! It is a text scan, not a compiler: a call into another file or crate is seen only
//! through the names in [`TOUCHES`], so a test that reaches the generator only through an
//! unlisted library function (e.g. `RunSpec::validate`, which builds the model once per
//! process to follow the method's events through its layers, `GridSpec::expand`, which
//! validates, and method calls in general) is not
//! caught, nor is a helper passed as a value (`.map(helper)`). It errs on the side of
//! asking for the lock (a same-named function elsewhere in the file counts): taking it
//! costs little. When in doubt, take the lock.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Identifiers and paths that mean a body seeds, draws from or reconfigures libtorch's
/// global state (matched as whole identifiers: `randn` does not match `randn_like`).
const TOUCHES: &[&str] = &[
    // seeding and the thread count
    "manual_seed",
    "seed_torch",
    "set_num_threads",
    "set_num_interop_threads",
    "set_deterministic",
    "cudnn_set_benchmark",
    "set_user_enabled_cudnn",
    // drawing
    "randn",
    "randn_like",
    "rand_like",
    "Tensor::rand",
    "randint",
    "randint_like",
    "randperm",
    "bernoulli",
    "bernoulli_",
    "multinomial",
    "normal_",
    "uniform_",
    "dropout",
    "Init::Randn",
    "Init::Uniform",
    "Init::Kaiming",
    "Init::Orthogonal",
    // tch's layers draw their default initialisation
    "nn::linear",
    "nn::conv",
    "nn::conv1d",
    "nn::conv2d",
    "nn::conv3d",
    // the library functions that build (and so initialise) a model
    "ap_models::build",
    "ap_models::initialise",
    "initialise",
    "prunable_shapes",
    "ap_runs::execute",
    // the test kit's drawing fixtures (`ap_testkit::tensors`)
    "seeded_normal",
    "random_keep",
    "random_selection",
    "toy_classification",
];

const LOCK: &str = "torch_lock";

/// `src` with comments, string literals and char literals replaced by spaces (newlines
/// kept, so positions and line numbers stay those of the file).
fn blank(src: &str) -> Vec<char> {
    let c: Vec<char> = src.chars().collect();
    let mut out = c.clone();
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let wipe = |out: &mut Vec<char>, from: usize, to: usize| {
        for o in out.iter_mut().take(to.min(c.len())).skip(from) {
            if *o != '\n' {
                *o = ' ';
            }
        }
    };
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            let end = (i..c.len()).find(|&j| c[j] == '\n').unwrap_or(c.len());
            wipe(&mut out, i, end);
            i = end;
        } else if c[i] == '/' && next == Some('*') {
            let (mut depth, mut j) = (1, i + 2);
            while j < c.len() && depth > 0 {
                if c[j] == '/' && c.get(j + 1) == Some(&'*') {
                    depth += 1;
                    j += 2;
                } else if c[j] == '*' && c.get(j + 1) == Some(&'/') {
                    depth -= 1;
                    j += 2;
                } else {
                    j += 1;
                }
            }
            wipe(&mut out, i, j);
            i = j;
        } else if c[i] == 'r'
            && (i == 0 || !ident(c[i - 1]) || (c[i - 1] == 'b' && (i < 2 || !ident(c[i - 2]))))
            && matches!(next, Some('"') | Some('#'))
        {
            // a raw string r"…", r#"…"#, br#"…"# (or an identifier starting with r#)
            let hashes = c[i + 1..].iter().take_while(|&&h| h == '#').count();
            if c.get(i + 1 + hashes) != Some(&'"') {
                i += 1 + hashes;
                continue;
            }
            let mut j = i + 2 + hashes;
            loop {
                if j >= c.len() {
                    break;
                }
                if c[j] == '"'
                    && c[j + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|&&h| h == '#')
                        .count()
                        == hashes
                {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            wipe(&mut out, i + 1, j);
            i = j;
        } else if c[i] == '"' {
            let mut j = i + 1;
            while j < c.len() && c[j] != '"' {
                j += if c[j] == '\\' { 2 } else { 1 };
            }
            wipe(&mut out, i, j + 1);
            i = j + 1;
        } else if c[i] == '\'' {
            // a char literal ('x', '\n', '\u{..}') or a lifetime / label ('a, 'static)
            if next == Some('\\') {
                let end = (i + 3..c.len()).find(|&j| c[j] == '\'').unwrap_or(c.len());
                wipe(&mut out, i, end + 1);
                i = end + 1;
            } else if c.get(i + 2) == Some(&'\'') {
                wipe(&mut out, i, i + 3);
                i += 3;
            } else {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    out
}

fn is_ident(ch: char) -> bool {
    ch.is_alphanumeric() || ch == '_'
}

/// Whether `text` names `token` as a whole identifier or path.
fn names(text: &[char], token: &str) -> bool {
    let t: Vec<char> = token.chars().collect();
    (0..text.len().saturating_sub(t.len() - 1)).any(|i| {
        text[i..i + t.len()] == t[..]
            && (i == 0 || !is_ident(text[i - 1]))
            && text.get(i + t.len()).is_none_or(|&ch| !is_ident(ch))
    })
}

/// The names a body calls as functions: `name(` or `path::name(`, not `.name(` nor `name!(`.
fn calls(body: &[char]) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut i = 0;
    while i < body.len() {
        if is_ident(body[i]) && (i == 0 || !is_ident(body[i - 1])) {
            let start = i;
            while i < body.len() && is_ident(body[i]) {
                i += 1;
            }
            let name: String = body[start..i].iter().collect();
            let after = body[i..].iter().find(|ch| !ch.is_whitespace());
            let before = body[..start].iter().rev().find(|ch| !ch.is_whitespace());
            if after == Some(&'(') && before != Some(&'.') && !name.starts_with(char::is_numeric) {
                out.insert(name);
            }
        } else {
            i += 1;
        }
    }
    out
}

fn matching(text: &[char], open: usize, l: char, r: char) -> usize {
    let mut depth = 0;
    for (j, &ch) in text.iter().enumerate().skip(open) {
        if ch == l {
            depth += 1;
        } else if ch == r {
            depth -= 1;
            if depth == 0 {
                return j;
            }
        }
    }
    text.len()
}

/// A function found in a file.
struct Function {
    name: String,
    line: usize,
    test: bool,
    /// Its signature names `MutexGuard`: it hands a guard to its caller.
    returns_guard: bool,
    body: Vec<char>,
}

/// Every function with a body in the blanked text, and whether `#[test]` marks it.
fn functions(text: &[char]) -> Vec<Function> {
    let mut out = vec![];
    let mut i = 0;
    while i + 2 < text.len() {
        let is_fn = text[i] == 'f'
            && text[i + 1] == 'n'
            && (i == 0 || !is_ident(text[i - 1]))
            && text[i + 2].is_whitespace();
        if !is_fn {
            i += 1;
            continue;
        }
        let mut j = i + 2;
        while j < text.len() && text[j].is_whitespace() {
            j += 1;
        }
        let start = j;
        while j < text.len() && is_ident(text[j]) {
            j += 1;
        }
        let name: String = text[start..j].iter().collect();
        // the parameter list (generics may hold parentheses too: skip to the first `(`
        // and past its match, then to the body's `{` or a declaration's `;`)
        let Some(open) = (j..text.len()).find(|&k| text[k] == '(') else {
            break;
        };
        let close = matching(text, open, '(', ')');
        let Some(brace) = (close..text.len()).find(|&k| text[k] == '{' || text[k] == ';') else {
            break;
        };
        if name.is_empty() || text[brace] == ';' {
            i = j;
            continue;
        }
        let end = matching(text, brace, '{', '}');
        let line = text[..i].iter().filter(|&&ch| ch == '\n').count() + 1;
        // attributes between the previous item and `fn`
        let head_start = text[..i]
            .iter()
            .rposition(|&ch| ch == ';' || ch == '}' || ch == '{')
            .map_or(0, |p| p + 1);
        let head: String = text[head_start..i].iter().collect();
        let test = head
            .split_whitespace()
            .collect::<String>()
            .contains("#[test]");
        let signature: String = text[j..brace].iter().collect();
        out.push(Function {
            name,
            line,
            test,
            returns_guard: signature.contains("MutexGuard"),
            body: text[brace..=end.min(text.len() - 1)].to_vec(),
        });
        // nested functions (inside tests or helpers) are found too
        i = brace;
    }
    out
}

/// The violations in one file's source, as `line fn name: reason`.
fn check_source(src: &str) -> Vec<String> {
    let text = blank(src);
    let fns = functions(&text);
    let touch_direct = |f: &Function| {
        TOUCHES
            .iter()
            .find(|t| names(&f.body, t))
            .map(|t| t.to_string())
    };
    // Fixed points over the same-file call graph (non-test functions only).
    let closure = |direct: &dyn Fn(&Function) -> bool| -> HashSet<String> {
        let mut set: HashSet<String> = fns
            .iter()
            .filter(|f| !f.test && direct(f))
            .map(|f| f.name.clone())
            .collect();
        loop {
            let grown: HashSet<String> = fns
                .iter()
                .filter(|f| !f.test && !set.contains(&f.name))
                .filter(|f| calls(&f.body).iter().any(|c| set.contains(c)))
                .map(|f| f.name.clone())
                .collect();
            if grown.is_empty() {
                return set;
            }
            set.extend(grown);
        }
    };
    let touching = closure(&|f| touch_direct(f).is_some());
    let locking = closure(&|f| names(&f.body, LOCK));
    let guards: HashSet<&str> = fns
        .iter()
        .filter(|f| !f.test && f.returns_guard && locking.contains(&f.name))
        .map(|f| f.name.as_str())
        .collect();
    let mut out = vec![];
    for f in fns.iter().filter(|f| f.test) {
        let mut called: Vec<String> = calls(&f.body).into_iter().collect();
        called.sort();
        // the test holds the lock for its body: it takes it, or a helper hands it the guard
        let held = names(&f.body, LOCK) || called.iter().any(|c| guards.contains(c.as_str()));
        // what it touches without holding the lock: directly, or through a helper that
        // does not take the lock itself
        let unlocked = touch_direct(f).or_else(|| {
            called
                .iter()
                .find(|c| touching.contains(*c) && !locking.contains(*c))
                .map(|c| format!("{c}()"))
        });
        if let Some(why) = unlocked.filter(|_| !held) {
            out.push(format!(
                "{} fn {}: uses `{why}` but does not take ap_testkit::torch_lock()",
                f.line, f.name
            ));
        }
        let relock = called
            .iter()
            .find(|c| locking.contains(*c) && !guards.contains(c.as_str()));
        if let Some(h) = relock.filter(|_| held) {
            out.push(format!(
                "{} fn {}: holds torch_lock and calls {h}(), which takes it too (deadlock)",
                f.line, f.name
            ));
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_test_touching_torch_takes_the_lock() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut dirs = vec![root.join("tests/src"), root.join("tests/tests")];
    for c in fs::read_dir(root.join("crates")).unwrap().flatten() {
        dirs.push(c.path().join("src"));
        dirs.push(c.path().join("tests"));
    }
    let mut files = vec![];
    for d in &dirs {
        rust_files(d, &mut files);
    }
    files.sort();
    assert!(
        files.len() > 20,
        "found only {} files under {}",
        files.len(),
        root.display()
    );
    let mut problems = vec![];
    let mut tests = 0;
    for f in &files {
        let src = fs::read_to_string(f).unwrap();
        tests += functions(&blank(&src)).iter().filter(|f| f.test).count();
        let rel = f.strip_prefix(&root).unwrap_or(f).display().to_string();
        problems.extend(check_source(&src).into_iter().map(|p| format!("{rel}:{p}")));
    }
    assert!(tests > 100, "found only {tests} tests");
    assert!(
        problems.is_empty(),
        "tests touching libtorch's global state without ap_testkit::torch_lock() \
         (see this guard's doc comment for the rule):\n{}",
        problems.join("\n")
    );
}

/// The scan itself: it flags what it should and nothing else, on small sources.
#[test]
fn the_scan_flags_unlocked_tests_only() {
    let src = r##"
use tch::Tensor;
/// seeds: manual_seed in a comment does not count
fn toy(seed: i64) -> Tensor {
    tch::manual_seed(seed);
    Tensor::randn([2], (tch::Kind::Float, tch::Device::Cpu))
}
fn locked_toy() -> Tensor {
    let _g = ap_testkit::torch_lock();
    toy(1)
}
fn lock() -> std::sync::MutexGuard<'static, ()> { ap_testkit::torch_lock() }
#[test]
fn direct_unlocked() {
    let s = "{ not a brace";
    let c = '{';
    tch::manual_seed(0);
}
#[test]
fn direct_locked() {
    let _g = ap_testkit::torch_lock();
    let _ = Tensor::randn([1], (tch::Kind::Float, tch::Device::Cpu));
}
#[test]
#[should_panic]
fn via_helper_unlocked() { let _ = toy(2); }
#[test]
fn via_locking_helper() { let _ = locked_toy(); }
#[test]
fn via_lock_helper() { let _g = lock(); let _ = toy(3); }
#[test]
fn deterministic() {
    let s = r#"tch::manual_seed(0) }"#;
    // Tensor::randn
    let _ = Tensor::from_slice(&[1.0f32]).randn_like_not_a_call;
}
#[test]
fn locked_helper_then_unlocked_draw() { let _ = locked_toy(); tch::manual_seed(4); }
#[test]
fn locked_helper_and_unlocked_helper() { let _ = locked_toy(); let _ = toy(5); }
#[test]
fn deadlock() { let _g = ap_testkit::torch_lock(); let _ = locked_toy(); }
mod tests {
    proptest! {
        #[test]
        fn prop_unlocked(x in 0i64..10, v in prop::collection::vec(0..3, 1..4)) {
            let _ = Tensor::rand_like(&Tensor::from_slice(&[x as f32]));
        }
        #[test]
        fn prop_locked(x in 0i64..10) {
            let _g = ap_testkit::torch_lock();
            tch::set_num_threads(1);
        }
    }
}
"##;
    let got: Vec<String> = check_source(src)
        .into_iter()
        .map(|p| {
            p.split(':')
                .next()
                .unwrap()
                .split_once(" fn ")
                .unwrap()
                .1
                .to_string()
        })
        .collect();
    assert_eq!(
        got,
        [
            "direct_unlocked",
            "via_helper_unlocked",
            "locked_helper_then_unlocked_draw",
            "locked_helper_and_unlocked_helper",
            "deadlock",
            "prop_unlocked"
        ]
    );
    let p = check_source(src);
    assert!(
        p[0].starts_with("14 fn direct_unlocked: uses `manual_seed`"),
        "{p:?}"
    );
    assert!(p[1].contains("uses `toy()`"), "{p:?}");
    assert!(
        p[4].contains("calls locked_toy(), which takes it too"),
        "{p:?}"
    );
    assert!(p[5].contains("uses `rand_like`"), "{p:?}");
}
