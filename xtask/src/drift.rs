//! Drift tests: the documentation against what it describes, run by `cargo test
//! --workspace` (and so by `cargo xtask test` and `cargo xtask ci`).
//!
//! - docs/architecture.md's crate table lists exactly the workspace members.
//! - Every figure the README embeds or links is a file in the repository that the report's
//!   plot code wrote (its SVG carries the plot's signature, and its name is the one the
//!   report gives it, under `results/<grid>/` or copied to `docs/img/<grid>-<name>`).
//! - Every table of numbers in the README's Results section follows a `cargo xtask …`
//!   command that produced it, which parses, and whose grid or profile exists.
//! - The README's test command is `cargo xtask test`, and CI (`.ci/run` → `cargo xtask
//!   ci`) runs it.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::Path;

use crate::ci::{self, Action};
use crate::workspace_root;

fn read(rel: &str) -> String {
    let p = workspace_root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

// ---------------------------------------------------------------------------------------
// docs/architecture.md's crate table against Cargo.toml's workspace members

/// The workspace members of the manifest `root/Cargo.toml`: package name → member path.
fn workspace_packages(root: &Path) -> Result<BTreeMap<String, String>, String> {
    let manifest = |dir: &Path| -> Result<toml::Table, String> {
        let p = dir.join("Cargo.toml");
        let text =
            std::fs::read_to_string(&p).map_err(|e| format!("reading {}: {e}", p.display()))?;
        text.parse()
            .map_err(|e| format!("parsing {}: {e}", p.display()))
    };
    let top = manifest(root)?;
    let members = top
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(|m| m.as_array())
        .ok_or("Cargo.toml has no [workspace] members array")?;
    let mut out = BTreeMap::new();
    for m in members {
        let m = m.as_str().ok_or("a workspace member is not a string")?;
        if m.contains('*') {
            return Err(format!(
                "workspace member `{m}` is a glob, which this test does not expand"
            ));
        }
        let name = manifest(&root.join(m))?
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("{m}/Cargo.toml has no package name"))?;
        out.insert(name, m.to_string());
    }
    Ok(out)
}

/// The package names in the crate table of `md` (the table whose header's first cell is
/// `crate`): for each row starting with "| `", the last backticked name in its first cell,
/// so "| `ap-mask` |" gives `ap-mask` and "| `tests/` (`ap-e2e`) |" gives `ap-e2e`.
fn crate_table_names(md: &str) -> Result<Vec<String>, String> {
    let mut lines = md.lines().skip_while(|l| {
        let cells: Vec<&str> = l.split('|').map(str::trim).collect();
        !(l.starts_with('|') && cells.get(1) == Some(&"crate"))
    });
    if lines.next().is_none() {
        return Err("no table with a `| crate |` header".into());
    }
    let mut names = vec![];
    for line in lines.take_while(|l| l.starts_with('|')) {
        if !line.starts_with("| `") {
            continue;
        }
        let first = line.split('|').nth(1).unwrap_or("");
        let ticked: Vec<&str> = first.split('`').skip(1).step_by(2).collect();
        match ticked.last() {
            Some(name) => names.push(name.to_string()),
            None => return Err(format!("row without a crate name: {line}")),
        }
    }
    Ok(names)
}

/// What differs between the crate table's `names` and the workspace `packages`, as
/// lines of a failure message; empty when they match.
fn crate_table_drift(names: &[String], packages: &BTreeMap<String, String>) -> Vec<String> {
    let listed: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let mut out = vec![];
    let missing: Vec<String> = packages
        .iter()
        .filter(|(n, _)| !listed.contains(n.as_str()))
        .map(|(n, path)| format!("`{n}` ({path})"))
        .collect();
    if !missing.is_empty() {
        out.push(format!(
            "workspace members without a row: {}",
            missing.join(", ")
        ));
    }
    let extra: Vec<&str> = listed
        .iter()
        .copied()
        .filter(|n| !packages.contains_key(*n))
        .collect();
    if !extra.is_empty() {
        out.push(format!(
            "rows that are not workspace members: {}",
            extra.join(", ")
        ));
    }
    let mut seen = BTreeSet::new();
    let twice: BTreeSet<&str> = names
        .iter()
        .filter(|n| !seen.insert(n.as_str()))
        .map(String::as_str)
        .collect();
    if !twice.is_empty() {
        let twice: Vec<&str> = twice.into_iter().collect();
        out.push(format!("rows listed twice: {}", twice.join(", ")));
    }
    out
}

#[test]
fn architecture_crate_table_lists_exactly_the_workspace_members() {
    let packages = workspace_packages(&workspace_root()).unwrap();
    let names = crate_table_names(&read("docs/architecture.md")).unwrap();
    let drift = crate_table_drift(&names, &packages);
    assert!(
        drift.is_empty(),
        "docs/architecture.md's crate table does not match Cargo.toml's workspace members \
         (add or remove rows \"| `name` | owns | depends on |\"):\n  {}",
        drift.join("\n  ")
    );
}

#[test]
fn crate_table_parsing_and_drift_by_example() {
    let md = "intro\n| a | b |\n|---|---|\n| `not-this` | x |\n\n\
              | crate | owns |\n| --- | --- |\n| `ap-mask` | masks, `Mask` |\n\
              | `tests/` (`ap-e2e`) | e2e |\n| `xtask` | tasks |\n\nafter\n| `later` | x |\n";
    let names = crate_table_names(md).unwrap();
    assert_eq!(names, ["ap-mask", "ap-e2e", "xtask"]);
    assert!(crate_table_names("| a | b |\n| `x` | y |\n").is_err());

    let ws: BTreeMap<String, String> = [
        ("ap-mask", "crates/ap-mask"),
        ("ap-e2e", "tests"),
        ("xtask", "xtask"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert!(crate_table_drift(&names, &ws).is_empty());

    let mut more = ws.clone();
    more.insert("ap-report".into(), "crates/ap-report".into());
    assert_eq!(
        crate_table_drift(&names, &more),
        ["workspace members without a row: `ap-report` (crates/ap-report)"]
    );
    let mut bogus = names.clone();
    bogus.push("ap-bogus".into());
    bogus.push("xtask".into());
    assert_eq!(
        crate_table_drift(&bogus, &ws),
        [
            "rows that are not workspace members: ap-bogus",
            "rows listed twice: xtask"
        ]
    );
}

/// Writes `text` to `root/rel`, making the folders on the way.
fn write_file(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().expect("a file in a folder")).unwrap();
    std::fs::write(&path, text).unwrap();
}

/// A temporary folder holding `files` (path relative to it, text).
fn temp_tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (rel, text) in files {
        write_file(dir.path(), rel, text);
    }
    dir
}

#[test]
fn workspace_packages_reads_member_manifests() {
    let dir = temp_tree(&[
        (
            "Cargo.toml",
            "[workspace]\nmembers = [\"crates/a\", \"tests\"]\n",
        ),
        ("crates/a/Cargo.toml", "[package]\nname = \"ap-a\"\n"),
        ("tests/Cargo.toml", "[package]\nname = \"ap-e2e\"\n"),
    ]);
    let root = dir.path();
    let ws = workspace_packages(root).unwrap();
    assert_eq!(ws.get("ap-a").map(String::as_str), Some("crates/a"));
    assert_eq!(ws.get("ap-e2e").map(String::as_str), Some("tests"));
    assert_eq!(ws.len(), 2);
    // A member without a manifest is an error naming it, not a silent skip.
    std::fs::write(
        root.join("Cargo.toml"),
        "[workspace]\nmembers = [\"crates/a\", \"crates/gone\"]\n",
    )
    .unwrap();
    let err = workspace_packages(root).unwrap_err();
    assert!(err.contains("crates/gone"), "{err}");
    // The real workspace: the end-to-end tests are package ap-e2e, and xtask is a member.
    let real = workspace_packages(&workspace_root()).unwrap();
    assert_eq!(real.get("ap-e2e").map(String::as_str), Some("tests"));
    assert!(real.contains_key("xtask"));
}

// ---------------------------------------------------------------------------------------
// README figures: files the report's plot code wrote

/// File extensions that make a link a figure.
const FIGURE_EXTENSIONS: [&str; 6] = ["svg", "png", "jpg", "jpeg", "gif", "webp"];

/// The targets of the figures `md` embeds (`![alt](target)`, `<img src="target">`) or
/// links (`[text](target)` with an image extension), without `#fragment` or title, in
/// order of first appearance.
fn figure_targets(md: &str) -> Vec<String> {
    let clean = |t: &str| -> String {
        let t = t.split_whitespace().next().unwrap_or("");
        let t = t.trim_start_matches('<').trim_end_matches('>');
        t.split('#').next().unwrap_or("").to_string()
    };
    let is_figure_file = |t: &str| {
        Path::new(t)
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| FIGURE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
    };
    let mut out: Vec<String> = vec![];
    let mut push = |t: String| {
        if !t.is_empty() && !out.contains(&t) {
            out.push(t);
        }
    };
    let mut rest = md;
    while let Some(i) = rest.find("](") {
        let image = rest[..i]
            .rfind('[')
            .is_some_and(|j| j > 0 && rest.as_bytes()[j - 1] == b'!');
        let after = &rest[i + 2..];
        let end = after.find(')').unwrap_or(after.len());
        let target = clean(&after[..end]);
        if image || is_figure_file(&target) {
            push(target);
        }
        rest = &after[end..];
    }
    for chunk in md.split("<img").skip(1) {
        let tag = chunk.split('>').next().unwrap_or("");
        if let Some(src) = tag.split("src=\"").nth(1) {
            push(clean(src.split('"').next().unwrap_or("")));
        }
    }
    out
}

/// The SVG root element the plot code writes (plotters' SVG backend at the plot's size,
/// `SIZE` in the report's `plot.rs`).
const PLOT_SVG_ROOT: &str = "<svg width=\"1000\" height=\"580\" viewBox=\"0 0 1000 580\"";

/// The x-axis description every plot carries (`x_desc` in the report's `plot.rs`).
const PLOT_X_DESC: &str =
    "density: kept fraction of prunable weights (log scale, sparser to the right)";

/// Why `rel` (a README figure, relative to `root`) is not a plot the report wrote, or
/// `None` when it is: an SVG with the plot code's signature (root element, x-axis
/// description, caption "`<model> / <dataset>: <test accuracy|dynamic DNR> vs density`")
/// whose name is the report's for that caption (`<acc|dnr>-<model>-<dataset>.svg`), either
/// where the report writes it (`results/<grid>/`) or copied to `docs/img/<grid>-<name>`,
/// `<grid>` naming a grid in `grids/`.
fn not_a_generated_plot(root: &Path, rel: &str) -> Option<String> {
    if rel.contains("://") {
        return Some("not a file in the repository (a URL)".into());
    }
    let path = root.join(rel);
    let Ok(svg) = std::fs::read_to_string(&path) else {
        return Some("no such file in the repository (or not readable as text)".into());
    };
    if !rel.ends_with(".svg") {
        return Some("not an SVG; the report's plot code writes only SVG".into());
    }
    if !after_prolog(&svg).starts_with(PLOT_SVG_ROOT) {
        return Some(format!("does not start with the plot's `{PLOT_SVG_ROOT}`"));
    }
    if !svg.contains(PLOT_X_DESC) {
        return Some(format!("lacks the plot's x-axis text `{PLOT_X_DESC}`"));
    }
    let caption = svg
        .split("<text")
        .nth(1)
        .and_then(|t| t.split_once('>'))
        .map(|(_, body)| body.split("</text>").next().unwrap_or("").trim())
        .unwrap_or("");
    let Some(name) = plot_file_name(caption) else {
        return Some(format!(
            "its caption `{caption}` is not a plot's `<model> / <dataset>: <metric> vs density`"
        ));
    };
    let file = Path::new(rel).file_name()?.to_str()?;
    let dir = Path::new(rel).parent()?.to_str()?;
    let grid = if dir == "docs/img" {
        file.strip_suffix(name.as_str())
            .and_then(|g| g.strip_suffix('-'))
    } else if file == name {
        dir.strip_prefix("results/")
    } else {
        None
    };
    match grid {
        Some(g) if root.join("grids").join(format!("{g}.toml")).is_file() => None,
        Some(g) => Some(format!("`{g}` is not a grid in grids/")),
        None => Some(format!(
            "the report writes this caption's plot as `results/<grid>/{name}`, so the \
             figure must be that file or `docs/img/<grid>-{name}`"
        )),
    }
}

/// `svg` from its root element on: without leading whitespace, an `<?xml …?>` declaration
/// and `<!-- … -->` comments (where a generator's marker would go).
fn after_prolog(svg: &str) -> &str {
    let mut rest = svg.trim_start();
    loop {
        let end = if rest.starts_with("<?") {
            rest.find("?>").map(|i| i + 2)
        } else if rest.starts_with("<!--") {
            rest.find("-->").map(|i| i + 3)
        } else {
            None
        };
        match end {
            Some(i) => rest = rest[i..].trim_start(),
            None => return rest,
        }
    }
}

/// The report's file name for a plot with `caption` (the plot code's `file_name`: the
/// metric's prefix, then model and dataset with characters other than ASCII letters,
/// digits, `.`, `_` and `-` made `_`), or `None` when it is not a plot caption.
fn plot_file_name(caption: &str) -> Option<String> {
    let (what, rest) = caption.split_once(": ")?;
    let prefix = match rest {
        "test accuracy vs density" => "acc",
        "dynamic DNR vs density" => "dnr",
        _ => return None,
    };
    let (model, dataset) = what.split_once(" / ")?;
    // Derived here from the report's documented rule, not shared: xtask links no crate of
    // the workspace, and an independent spelling of the rule checks the plot code's.
    let clean = |s: &str| {
        s.replace(
            |c: char| !c.is_ascii_alphanumeric() && !".-_".contains(c),
            "_",
        )
    };
    Some(format!("{prefix}-{}-{}.svg", clean(model), clean(dataset)))
}

#[test]
fn readme_figures_are_plots_the_report_wrote() {
    let root = workspace_root();
    let figures = figure_targets(&read("README.md"));
    assert!(
        !figures.is_empty(),
        "README.md embeds no figure; this test expects the quick profile's plot"
    );
    let bad: Vec<String> = figures
        .iter()
        .filter_map(|f| not_a_generated_plot(&root, f).map(|why| format!("{f}: {why}")))
        .collect();
    assert!(
        bad.is_empty(),
        "README figures that are not plots written by `ap report` (copy them from \
         results/<grid>/ after `cargo xtask report`):\n  {}",
        bad.join("\n  ")
    );
}

#[test]
fn figure_links_by_example() {
    let md = "![a plot](docs/img/x.svg \"title\") and [the data](results/q/summary.csv), \
              [a picture](docs/img/y.PNG#frag), [docs](docs/methods.md), \
              ![badge](https://example.org/b), again ![a plot](docs/img/x.svg)\n\
              <img alt=\"z\" src=\"docs/img/z.svg\"/>";
    assert_eq!(
        figure_targets(md),
        [
            "docs/img/x.svg",
            "docs/img/y.PNG",
            "https://example.org/b",
            "docs/img/z.svg"
        ]
    );
}

#[test]
fn plot_signature_by_example() {
    let dir = temp_tree(&[("grids/quick.toml", "")]);
    let root = dir.path();
    let svg = |caption: &str| {
        format!(
            "{PLOT_SVG_ROOT} xmlns=\"http://www.w3.org/2000/svg\">\n<rect/>\n\
             <text x=\"4\" y=\"1\">\n{caption}\n</text>\n<text>\n{PLOT_X_DESC}\n</text>\n</svg>\n"
        )
    };
    let put = |rel: &str, text: &str| write_file(root, rel, text);
    let acc = svg("lenet300-100 / mnist: test accuracy vs density");
    put("docs/img/quick-acc-lenet300-100-mnist.svg", &acc);
    put("results/quick/acc-lenet300-100-mnist.svg", &acc);
    put(
        "docs/img/quick-dnr-resnet20_b-cifar10.svg",
        &svg("resnet20 b / cifar10: dynamic DNR vs density"),
    );
    // A generator's comment before the root element is allowed.
    put(
        "results/quick/dnr-lenet300-100-mnist.svg",
        &format!(
            "<?xml version=\"1.0\"?>\n<!-- generated by ap report -->\n{}",
            svg("lenet300-100 / mnist: dynamic DNR vs density")
        ),
    );
    for ok in [
        "results/quick/dnr-lenet300-100-mnist.svg",
        "docs/img/quick-acc-lenet300-100-mnist.svg",
        "results/quick/acc-lenet300-100-mnist.svg",
        "docs/img/quick-dnr-resnet20_b-cifar10.svg",
    ] {
        assert_eq!(not_a_generated_plot(root, ok), None, "{ok}");
    }
    // Each of these must fail, and say why.
    put("docs/img/quick-dnr-lenet300-100-mnist.svg", &acc); // name says dnr, plot is acc
    put("docs/img/paper-acc-lenet300-100-mnist.svg", &acc); // no grids/paper.toml
    put("docs/img/acc-lenet300-100-mnist.svg", &acc); // no grid prefix
    put("docs/img/drawn.svg", "<svg width=\"10\"></svg>"); // drawn by hand
    put(
        "docs/img/quick-acc-vgg-cifar.svg",
        &svg("vgg / cifar: training loss vs epoch"),
    );
    put("docs/img/photo.png", "not an svg");
    for (bad, why) in [
        (
            "docs/img/quick-dnr-lenet300-100-mnist.svg",
            "acc-lenet300-100-mnist.svg",
        ),
        (
            "docs/img/paper-acc-lenet300-100-mnist.svg",
            "`paper` is not a grid",
        ),
        (
            "docs/img/acc-lenet300-100-mnist.svg",
            "docs/img/<grid>-acc-",
        ),
        ("docs/img/drawn.svg", "does not start with the plot's"),
        ("docs/img/quick-acc-vgg-cifar.svg", "is not a plot's"),
        ("docs/img/photo.png", "not an SVG"),
        ("docs/img/missing.svg", "no such file"),
        ("https://example.org/x.svg", "URL"),
    ] {
        let got = not_a_generated_plot(root, bad).unwrap_or_default();
        assert!(got.contains(why), "{bad}: expected `{why}` in `{got}`");
    }
}

// ---------------------------------------------------------------------------------------
// README Results tables: each after the command that produced it

/// For each table of numbers in `md`'s `## Results` section, the problems with the
/// `cargo xtask …` commands its `###` subsection gives before it: none given, one that
/// does not parse as an xtask command, or a `--grid` / `--profile` that does not exist
/// under `root`. Each problem names the table by its first line.
fn results_table_problems(md: &str, root: &Path) -> Vec<String> {
    let section = md
        .split("\n## ")
        .find(|s| s.starts_with("Results"))
        .unwrap_or("");
    let mut problems = vec![];
    let mut before = String::new(); // the subsection's text so far
    let mut lines = section.lines().peekable();
    while let Some(line) = lines.next() {
        if line.starts_with("### ") {
            before.clear();
        }
        if !line.starts_with('|') {
            before.push_str(line);
            before.push('\n');
            continue;
        }
        let mut table = vec![line];
        while let Some(l) = lines.next_if(|l| l.starts_with('|')) {
            table.push(l);
        }
        // Rows after the header and the separator; a table without digits there is not
        // a results table.
        if !table
            .iter()
            .skip(2)
            .any(|r| r.chars().any(|c| c.is_ascii_digit()))
        {
            continue;
        }
        let commands: Vec<&str> = before
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|c| c.starts_with("cargo xtask "))
            .collect();
        if commands.is_empty() {
            problems.push(format!(
                "table `{line}`: no `cargo xtask …` command before it in its subsection"
            ));
        }
        for c in commands {
            if let Some(why) = command_problem(c, root) {
                problems.push(format!("table `{line}`: `{c}`: {why}"));
            }
        }
    }
    problems
}

/// Why the README command `cmd` (`cargo xtask …`) could not have produced a table: it
/// does not parse, or names a grid file or profile that does not exist.
fn command_problem(cmd: &str, root: &Path) -> Option<String> {
    let words: Vec<&str> = cmd.split_whitespace().skip(2).collect();
    let args: Vec<OsString> = words.iter().map(OsString::from).collect();
    if let Err(e) = crate::parse_args(args) {
        return Some(format!("not an xtask command: {e}"));
    }
    for pair in words.windows(2) {
        let missing = match pair[0] {
            "--grid" => Some(pair[1].to_string()),
            "--profile" => Some(format!("grids/{}.toml", pair[1])),
            _ => None,
        };
        if let Some(file) = missing.filter(|f| !root.join(f).is_file()) {
            return Some(format!("{file} does not exist"));
        }
    }
    None
}

#[test]
fn readme_results_tables_name_their_commands() {
    let md = read("README.md");
    let problems = results_table_problems(&md, &workspace_root());
    assert!(
        problems.is_empty(),
        "README.md's Results tables must follow the command that produced them \
         (\"every number here comes from ... the command given\"):\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn results_table_rule_by_example() {
    let dir = temp_tree(&[("grids/quick.toml", ""), ("grids/methods.toml", "")]);
    let root = dir.path();
    let good = "# T\n\n| not | results |\n|---|---|\n| 1 | 2 |\n\n## Results\n\nintro\n\n\
                ### `cargo xtask reproduce` (the `quick` profile)\n\n| a | b |\n|---|---|\n\
                | x | 1.0 |\n\n### Methods\n\n`cargo xtask reproduce --grid grids/methods.toml` \
                (1 min)\n\n| a | b |\n|---|---|\n| x | 2.0 |\n\n| words | only |\n|---|---|\n\
                | a | b |\n\n## Using it\n\n| c | d |\n|---|---|\n| 3 | 4 |\n";
    assert_eq!(results_table_problems(good, root), Vec::<String>::new());

    // The problems of `good` with `from` replaced by `to` (which must be in it).
    let problems = |from: &str, to: &str| {
        assert!(good.contains(from), "{from}");
        results_table_problems(&good.replace(from, to), root)
    };
    // A table whose subsection gives no command (the previous subsection's does not count).
    let p = problems(
        "### Methods\n\n`cargo xtask reproduce --grid grids/methods.toml`",
        "### Methods\n\nrun it",
    );
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains("no `cargo xtask …` command"), "{p:?}");
    // A grid that does not exist.
    let p = problems("grids/methods.toml", "grids/gone.toml");
    assert!(
        p.len() == 1 && p[0].contains("grids/gone.toml does not exist"),
        "{p:?}"
    );
    // A profile that does not exist, and a command xtask does not have.
    let p = problems(
        "`cargo xtask reproduce` (the",
        "`cargo xtask reproduce --profile paper` and `cargo xtask frobnicate` (the",
    );
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[0].contains("grids/paper.toml does not exist"), "{p:?}");
    assert!(p[1].contains("not an xtask command"), "{p:?}");
}

// ---------------------------------------------------------------------------------------
// The README's test command, run by CI

/// Whether `text` has a line (not a comment) that is the command `cmd`, alone or followed
/// by arguments or a `#` comment.
fn has_command_line(text: &str, cmd: &str) -> bool {
    text.lines().map(str::trim_start).any(|l| {
        !l.starts_with('#')
            && l.strip_prefix(cmd)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
    })
}

#[test]
fn readme_test_command_is_run_by_ci() {
    let readme = read("README.md");
    assert!(
        has_command_line(&readme, "cargo xtask test"),
        "README.md no longer gives `cargo xtask test` as the test command; CI's test step \
         (xtask/src/ci.rs) and docs/testing.md name it"
    );
    let ci_script = read(".ci/run");
    assert!(
        has_command_line(&ci_script, "cargo xtask ci"),
        ".ci/run does not run `cargo xtask ci`"
    );
    let steps = ci::plan(vec![]);
    assert!(
        steps.iter().any(|s| s.action == Action::Test(vec![])),
        "`cargo xtask ci` has no `cargo xtask test` step: {steps:?}"
    );
    assert!(has_command_line(
        "  cargo xtask test   # all",
        "cargo xtask test"
    ));
    assert!(has_command_line("cargo xtask ci \"$@\"", "cargo xtask ci"));
    assert!(!has_command_line("# cargo xtask ci", "cargo xtask ci"));
    assert!(!has_command_line("cargo xtask cinema", "cargo xtask ci"));
}

/// The library example the README points to stays what it claims: under 80 lines, and
/// named where the README says it is.
#[test]
fn library_example_stays_short_and_is_linked() {
    let path = "crates/ap-prune/examples/own_model.rs";
    let lines = read(path).lines().count();
    assert!(
        lines <= 80,
        "{path} has {lines} lines; the README promises under 80"
    );
    assert!(
        read("README.md").contains(path),
        "README.md no longer points to {path}"
    );
}
