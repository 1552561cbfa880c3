//! The container path without a container engine: the files the `Dockerfile` copies form
//! a workspace that loads, the image runs unprivileged with a health check,
//! `docker-compose.yml` carries no secret and publishes on loopback only, and the pieces
//! of the binary a container relies on (the `healthcheck` command, log lines without
//! colour codes or as JSON, refusing a placeholder admin token) work.
//!
//! Building the image and starting compose need an engine; `.ci/run` does that where
//! one is available and says so where none is.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Backend, TestApp, TestDb, serve_args};
use outhook::clock::SystemClock;
use outhook::domain::token::Role;
use serde_json::Value;
use uuid::Uuid;

fn repo_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

fn read_repo_file(name: &str) -> String {
    std::fs::read_to_string(repo_file(name)).unwrap_or_else(|e| panic!("reading {name}: {e}"))
}

// ---------------------------------------------------------------------------------------
// The Dockerfile, read as the engine reads it (the parts this project uses).

/// One Dockerfile instruction: its keyword in capitals and the rest of its line, with
/// continuation lines joined and comment lines dropped.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

fn instructions(dockerfile: &str) -> Vec<Instruction> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(start) => {
                current.push_str(start);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    assert!(
        current.is_empty(),
        "the Dockerfile ends inside a continued line"
    );
    joined
        .into_iter()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (keyword, args) = line
                .trim()
                .split_once(char::is_whitespace)
                .unwrap_or((&line, ""));
            Instruction {
                keyword: keyword.to_ascii_uppercase(),
                args: args.trim().to_owned(),
            }
        })
        .collect()
}

/// The words of a COPY: flags apart, then sources and destination (shell or JSON form).
fn copy_words(args: &str) -> (Vec<String>, Vec<String>) {
    let mut flags = Vec::new();
    let mut rest = args.trim();
    while let Some(flagged) = rest.strip_prefix("--") {
        let (flag, after) = flagged
            .split_once(char::is_whitespace)
            .unwrap_or((flagged, ""));
        flags.push(flag.to_owned());
        rest = after.trim_start();
    }
    let words = if rest.starts_with('[') {
        serde_json::from_str::<Vec<String>>(rest).expect("a COPY in JSON form is a string array")
    } else {
        rest.split_whitespace().map(str::to_owned).collect()
    };
    (flags, words)
}

/// `.dockerignore`: patterns relative to the context, `*`, `?` and `**`, `!` re-includes,
/// the last matching line wins, and a pattern that matches a folder excludes what it holds.
struct DockerIgnore {
    rules: Vec<(bool, Vec<String>)>,
}

impl DockerIgnore {
    /// The file in the context folder; none means nothing is left out.
    fn read(path: &Path) -> Self {
        Self::parse(&std::fs::read_to_string(path).unwrap_or_default())
    }

    fn parse(text: &str) -> Self {
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| {
                let (exclude, pattern) = match line.strip_prefix('!') {
                    Some(pattern) => (false, pattern),
                    None => (true, line),
                };
                let parts = pattern
                    .split('/')
                    .filter(|part| !part.is_empty() && *part != ".")
                    .map(str::to_owned)
                    .collect();
                (exclude, parts)
            })
            .collect();
        Self { rules }
    }

    /// Whether a context path (`/`-separated, relative) is left out of the context.
    fn excludes(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let mut excluded = false;
        for (exclude, pattern) in &self.rules {
            if (1..=parts.len()).any(|n| glob_matches(pattern, &parts[..n])) {
                excluded = *exclude;
            }
        }
        excluded
    }
}

fn glob_matches(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((part, rest)) if part == "**" => {
            (0..=path.len()).any(|skip| glob_matches(rest, &path[skip..]))
        }
        Some((part, rest)) => {
            !path.is_empty()
                && component_matches(part.as_bytes(), path[0].as_bytes())
                && glob_matches(rest, &path[1..])
        }
    }
}

fn component_matches(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            component_matches(&pattern[1..], name)
                || (!name.is_empty() && component_matches(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => component_matches(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => component_matches(&pattern[1..], &name[1..]),
        _ => false,
    }
}

/// A folder removed when the test ends, passed or not.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Self {
        let path = std::env::temp_dir().join(format!("outhook-{what}-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).expect("creating a temporary folder");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies a context file or folder the way COPY does (a folder's contents go into the
/// destination), leaving out what `.dockerignore` excludes; returns the files copied.
fn copy_from_context(context: &Path, ignore: &DockerIgnore, source: &str, target: &Path) -> usize {
    let from = context.join(source);
    if from.is_dir() {
        std::fs::create_dir_all(target).unwrap();
        let mut copied = 0;
        for entry in std::fs::read_dir(&from).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().expect("UTF-8 file names");
            let inner = format!("{source}/{name}");
            if !ignore.excludes(&inner) {
                copied += copy_from_context(context, ignore, &inner, &target.join(&name));
            }
        }
        copied
    } else {
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&from, target).unwrap_or_else(|e| panic!("copying {source}: {e}"));
        1
    }
}

/// The build stage laid out: every COPY from the context up to the `cargo build`, into
/// `root` standing for the image's `/`. Returns the folder `cargo build` runs in and the
/// command itself.
fn lay_out_build_stage(dockerfile: &str, context: &Path, root: &Path) -> (PathBuf, String) {
    let ignore = DockerIgnore::read(&context.join(".dockerignore"));
    let mut workdir = PathBuf::from("/");
    for instruction in instructions(dockerfile) {
        match instruction.keyword.as_str() {
            "FROM" => workdir = PathBuf::from("/"),
            "WORKDIR" => workdir = workdir.join(&instruction.args),
            "ADD" => panic!(
                "use COPY: this test lays out COPY only ({})",
                instruction.args
            ),
            "COPY" => {
                let (flags, mut words) = copy_words(&instruction.args);
                if flags.iter().any(|f| f.starts_with("from=")) {
                    continue; // from another stage, not from the context
                }
                let destination = words.pop().expect("COPY has a destination");
                assert!(
                    !words.is_empty(),
                    "COPY without a source: {}",
                    instruction.args
                );
                let into_folder =
                    words.len() > 1 || destination.ends_with('/') || destination == ".";
                let destination = root.join(workdir.join(&destination).strip_prefix("/").unwrap());
                for source in &words {
                    assert!(
                        !source.contains(['*', '?', '[']) && !source.split('/').any(|p| p == ".."),
                        "COPY {source}: this test reads plain context paths only"
                    );
                    let source = source.trim_end_matches('/');
                    assert!(
                        context.join(source).exists(),
                        "COPY {source}: no such file in the repository"
                    );
                    assert!(
                        !ignore.excludes(source),
                        "COPY {source}: .dockerignore leaves it out of the build context"
                    );
                    let is_file = context.join(source).is_file();
                    let target = if is_file && (into_folder || destination.is_dir()) {
                        destination.join(Path::new(source).file_name().unwrap())
                    } else {
                        destination.clone()
                    };
                    copy_from_context(context, &ignore, source, &target);
                }
            }
            "RUN" if instruction.args.contains("cargo build") => {
                let folder = root.join(workdir.strip_prefix("/").unwrap());
                return (folder, instruction.args);
            }
            _ => {}
        }
    }
    panic!("the Dockerfile has no RUN with `cargo build`");
}

/// The string literals given to `include_str!` and `include_bytes!` in a source file.
fn included_paths(source: &str) -> Vec<String> {
    let mut paths = Vec::new();
    for marker in ["include_str!(", "include_bytes!("] {
        for (at, _) in source.match_indices(marker) {
            let rest = source[at + marker.len()..].trim_start();
            if let Some(literal) = rest.strip_prefix('"') {
                let end = literal.find('"').expect("a closed string literal");
                paths.push(literal[..end].to_owned());
            }
        }
    }
    paths
}

fn rust_files(folder: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(folder).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The platform the tests run on, e.g. `x86_64-unknown-linux-gnu`.
fn host_triple() -> String {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let version = Command::new(rustc)
        .arg("-vV")
        .output()
        .expect("running rustc -vV");
    text(&version.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_owned()
}

/// Lays out what `dockerfile` copies from this repository into `root` and loads the
/// workspace there as `cargo build` in the image would: offline, with the committed lock
/// file unchanged. Returns `cargo metadata`'s answer, or its error.
fn load_image_workspace(dockerfile: &str, root: &Path) -> Result<Value, String> {
    let (build_dir, build_command) =
        lay_out_build_stage(dockerfile, Path::new(env!("CARGO_MANIFEST_DIR")), root);
    assert!(
        build_command.contains("--locked"),
        "the image builds with the committed Cargo.lock: {build_command}"
    );
    // Only this platform's dependencies: a build downloads no others, so --offline has
    // no others to read.
    let metadata = cargo()
        .args(["metadata", "--offline", "--locked", "--format-version", "1"])
        .args(["--filter-platform", &host_triple()])
        .arg("--manifest-path")
        .arg(build_dir.join("Cargo.toml"))
        .current_dir(&build_dir)
        .output()
        .expect("running cargo metadata");
    if !metadata.status.success() {
        return Err(text(&metadata.stderr));
    }
    Ok(serde_json::from_slice(&metadata.stdout).expect("cargo metadata prints JSON"))
}

#[test]
fn the_files_the_dockerfile_copies_form_a_workspace_that_loads() {
    let started = Instant::now();
    let root = TempDir::new("image-layout");
    let metadata =
        load_image_workspace(&read_repo_file("Dockerfile"), &root.0).unwrap_or_else(|error| {
            panic!(
                "the workspace the Dockerfile copies does not load (a member or a file is \
                 missing from its COPY lines):\n{error}"
            )
        });

    // cargo metadata does not open the sources: every target that `cargo build` compiles
    // must be there, and every file they embed.
    let members: BTreeSet<&str> = metadata["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    let mut checked_targets = 0;
    let mut sources = Vec::new();
    for package in metadata["packages"].as_array().unwrap() {
        if !members.contains(package["id"].as_str().unwrap()) {
            continue;
        }
        for target in package["targets"].as_array().unwrap() {
            let kinds: Vec<&str> = target["kind"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap())
                .collect();
            if kinds
                .iter()
                .any(|k| ["test", "bench", "example"].contains(k))
            {
                continue;
            }
            let path = Path::new(target["src_path"].as_str().unwrap());
            assert!(
                path.is_file(),
                "{} target {} needs {}, which the Dockerfile does not copy",
                package["name"],
                target["name"],
                path.display()
            );
            checked_targets += 1;
        }
        let manifest = Path::new(package["manifest_path"].as_str().unwrap());
        rust_files(&manifest.parent().unwrap().join("src"), &mut sources);
    }
    assert!(
        checked_targets >= 3,
        "outhook's lib and bin and the bench binary"
    );
    let mut includes = 0;
    for source in &sources {
        let text = std::fs::read_to_string(source).unwrap();
        for included in included_paths(&text) {
            let path = source.parent().unwrap().join(&included);
            assert!(
                path.is_file(),
                "{} embeds {included}, which the Dockerfile does not copy",
                source.display()
            );
            includes += 1;
        }
    }
    assert!(
        includes > 0,
        "the migrations are embedded, so some file is included"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the check took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_dockerfile_that_leaves_out_a_workspace_member_is_caught() {
    // The Dockerfile as it was when the image could not be built: `bench` is a member of
    // the workspace but was not copied.
    let without_bench = "FROM rust:1-bookworm AS build\nWORKDIR /src\n\
                         COPY Cargo.toml Cargo.lock ./\nCOPY src ./src\n\
                         COPY migrations ./migrations\n\
                         RUN cargo build --release --locked\n";
    let root = TempDir::new("image-layout-without-bench");
    let error = load_image_workspace(without_bench, &root.0)
        .expect_err("a workspace without its bench member loads");
    assert!(
        error.contains("failed to load manifest for workspace member") && error.contains("bench"),
        "{error}"
    );
}

#[test]
fn the_dockerignore_reading_follows_the_engine() {
    let ignore = DockerIgnore::parse("# comment\ntarget/\n**/*.db\n.git\ndocs/*\n!docs/keep.md\n");
    for excluded in [
        "target",
        "target/release/outhook",
        "a.db",
        "deep/er/b.db",
        ".git/HEAD",
        "docs/x.md",
    ] {
        assert!(ignore.excludes(excluded), "{excluded} is excluded");
    }
    for kept in [
        "src/main.rs",
        "bench/target.rs",
        "a.dbx",
        "docs/keep.md",
        "Cargo.toml",
    ] {
        assert!(!ignore.excludes(kept), "{kept} is kept");
    }
}

#[test]
fn the_image_runs_unprivileged_with_a_health_check() {
    let all = instructions(&read_repo_file("Dockerfile"));
    let last_stage = all
        .iter()
        .rposition(|i| i.keyword == "FROM")
        .expect("the Dockerfile has a FROM");
    let runtime = &all[last_stage..];
    let user = runtime
        .iter()
        .rfind(|i| i.keyword == "USER")
        .expect("the runtime image names a USER (otherwise it runs as root)");
    let name = user.args.split(':').next().unwrap();
    assert!(
        name != "root" && name != "0",
        "the runtime user is root: USER {}",
        user.args
    );
    let health = runtime
        .iter()
        .find(|i| i.keyword == "HEALTHCHECK")
        .expect("the runtime image has a HEALTHCHECK");
    assert!(
        health.args.contains("outhook") && health.args.contains("healthcheck"),
        "the health check runs `outhook healthcheck` (the image has no curl): {}",
        health.args
    );
    // No secret baked into an image layer.
    for instruction in runtime.iter().chain(&all[..last_stage]) {
        if matches!(instruction.keyword.as_str(), "ENV" | "ARG") {
            let name = instruction.args.split(['=', ' ']).next().unwrap();
            assert!(
                !names_a_secret(name),
                "{} {} puts a secret into the image",
                instruction.keyword,
                instruction.args
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// docker-compose.yml, read as text: the checks need its variables and values only.

fn names_a_secret(variable: &str) -> bool {
    let upper = variable.to_ascii_uppercase();
    ["TOKEN", "SECRET", "PASSWORD", "PASSWD"]
        .iter()
        .any(|word| upper.contains(word))
}

/// Every `${NAME…}` in a text: the name and what follows it up to the closing brace.
fn interpolations(text: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let inner = &rest[start + 2..];
        let end = inner.find('}').expect("a closed ${…}");
        let body = &inner[..end];
        let name_end = body
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(body.len());
        found.push((body[..name_end].to_owned(), body[name_end..].to_owned()));
        rest = &inner[end + 1..];
    }
    found
}

/// The value compose uses when the variables are unset: defaults applied, others empty.
fn with_defaults(text: &str) -> String {
    let mut out = text.to_owned();
    for (name, modifier) in interpolations(text) {
        let value = modifier
            .strip_prefix(":-")
            .or_else(|| modifier.strip_prefix('-'))
            .unwrap_or("");
        out = out.replacen(&format!("${{{name}{modifier}}}"), value, 1);
    }
    out
}

/// What a compose file holds that a reader could use as a secret, or that publishes a
/// port beyond this machine by default.
fn compose_problems(compose: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, modifier) in interpolations(compose) {
        let required =
            modifier.is_empty() || modifier.starts_with(":?") || modifier.starts_with('?');
        if names_a_secret(&name) && !required {
            problems.push(format!("${{{name}{modifier}}} gives a secret a default"));
        }
    }
    let mut in_ports = None;
    for line in compose.lines() {
        let content = line.split(" #").next().unwrap().trim_end();
        let trimmed = content.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = content.len() - trimmed.len();
        if in_ports.is_some_and(|at| indent <= at && !trimmed.starts_with('-')) {
            in_ports = None;
        }
        if trimmed == "ports:" {
            in_ports = Some(indent);
            continue;
        }
        let item = trimmed.strip_prefix("- ").unwrap_or(trimmed);
        if in_ports.is_some() && trimmed.starts_with('-') {
            let published = with_defaults(item.trim_matches(['"', '\'']));
            if !(published.starts_with("127.0.0.1:") || published.starts_with("[::1]:")) {
                problems.push(format!(
                    "port {item} is published on every interface of the host by default"
                ));
            }
            continue;
        }
        // An environment entry, `NAME=value` or `NAME: value`.
        let entry = item
            .split_once('=')
            .filter(|(name, _)| !name.contains([' ', ':']))
            .or_else(|| item.split_once(": "));
        if let Some((name, value)) = entry {
            let value = value.trim().trim_matches(['"', '\'']);
            let only_required_variable =
                interpolations(value).len() == 1 && with_defaults(value).is_empty();
            if names_a_secret(name) && !value.is_empty() && !only_required_variable {
                problems.push(format!("{name} has a value written in the file"));
            }
        }
        // A password inside a URL: scheme://user:password@host.
        for (at, _) in content.match_indices("://") {
            let authority = content[at + 3..].split(['/', '?', ' ']).next().unwrap();
            if let Some((userinfo, _)) = authority.rsplit_once('@')
                && userinfo.contains(':')
            {
                problems.push(format!("a URL carries a password: {}", content.trim()));
            }
        }
    }
    problems
}

#[test]
fn compose_has_no_default_secret_and_publishes_on_loopback() {
    let problems = compose_problems(&read_repo_file("docker-compose.yml"));
    assert!(problems.is_empty(), "docker-compose.yml: {problems:#?}");
}

#[test]
fn the_compose_check_finds_each_kind_of_problem() {
    // The check itself, on the shapes it must catch and the ones it must let through.
    let bad = r#"
services:
  db:
    environment:
      POSTGRES_PASSWORD: outhook
    ports:
      - "5432:5432"
  app:
    environment:
      - DATABASE_URL=postgres://outhook:outhook@db:5432/outhook
      - OUTHOOK_ADMIN_TOKEN=${OUTHOOK_ADMIN_TOKEN:-change-me-to-a-long-random-token}
      - API_SECRET=abc
    ports:
      - "${PORT:-8080}:8080"
"#;
    let problems = compose_problems(bad);
    let expected = [
        "POSTGRES_PASSWORD has a value written in the file",
        "port \"5432:5432\" is published on every interface",
        "a URL carries a password: - DATABASE_URL=postgres://outhook:outhook@",
        "${OUTHOOK_ADMIN_TOKEN:-change-me-to-a-long-random-token} gives a secret a default",
        "OUTHOOK_ADMIN_TOKEN has a value written in the file",
        "API_SECRET has a value written in the file",
        "port \"${PORT:-8080}:8080\" is published on every interface",
    ];
    for fragment in expected {
        assert!(
            problems.iter().any(|p| p.contains(fragment)),
            "not found: {fragment} in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    let good = r#"
services:
  app:
    environment:
      - OUTHOOK_ADMIN_TOKEN
      - OTHER_TOKEN=${OTHER_TOKEN:?set OTHER_TOKEN}
      - DATABASE_URL=postgres://outhook@localhost/outhook?host=/run/pg
      - OUTHOOK_LOG_FORMAT=${OUTHOOK_LOG_FORMAT:-text}
    ports:
      - "${HOST_ADDR:-127.0.0.1:8080}:8080"
      - "[::1]:9090:9090"
"#;
    assert_eq!(compose_problems(good), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------
// The binary, as the container runs it.

/// Runs the outhook binary with a bounded wait; stdin closed, stdout and stderr piped
/// (so stderr is not a terminal).
fn run_outhook(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_outhook"));
    command
        .args(args)
        .env_remove("OUTHOOK_LOG_FORMAT")
        .env_remove("OUTHOOK_ADMIN_TOKEN")
        .env_remove("OUTHOOK_BIND")
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("starting outhook");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("outhook {args:?} did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn log_lines_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let folder = TempDir::new("log-text");
    let url = format!("sqlite://{}", folder.0.join("o.db").display());
    let out = run_outhook(&["migrate", "--database-url", &url], &[]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("the schema is up to date"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a log that is not a terminal: {stderr:?}"
    );
}

#[test]
fn json_logs_are_one_object_a_line_by_variable_or_flag() {
    let folder = TempDir::new("log-json");
    let url = format!("sqlite://{}", folder.0.join("o.db").display());
    let by_variable = run_outhook(
        &["migrate", "--database-url", &url],
        &[("OUTHOOK_LOG_FORMAT", "json")],
    );
    let by_flag = run_outhook(
        &["migrate", "--log-format", "json", "--database-url", &url],
        &[],
    );
    for out in [by_variable, by_flag] {
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let lines: Vec<Value> = stderr
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"))
            })
            .collect();
        let done = lines
            .iter()
            .find(|line| line["message"] == "the schema is up to date")
            .unwrap_or_else(|| panic!("no line says the schema is up to date: {stderr}"));
        assert_eq!(done["level"], "INFO");
        assert_eq!(done["backend"], "sqlite");
        assert!(done["timestamp"].is_string());
    }
    let refused = run_outhook(
        &["migrate", "--database-url", "mysql://nope"],
        &[("OUTHOOK_LOG_FORMAT", "json")],
    );
    assert!(!refused.status.success());
    let stderr = text(&refused.stderr);
    let last: Value = serde_json::from_str(stderr.lines().last().unwrap())
        .unwrap_or_else(|e| panic!("the reason for stopping is a JSON line too ({e}): {stderr}"));
    assert_eq!(last["level"], "ERROR");
    assert!(
        last["error"].as_str().unwrap().contains("DATABASE_URL"),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_healthcheck_command_passes_only_for_a_ready_instance() {
    let app = TestApp::start(Backend::Sqlite).await;
    let addr = app.running.as_ref().unwrap().addr.to_string();
    let run = move |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_outhook(&args, &[])
        })
    };
    let ready = run(vec!["healthcheck".into(), "--bind".into(), addr.clone()])
        .await
        .unwrap();
    assert!(ready.status.success(), "{}", text(&ready.stderr));
    assert!(text(&ready.stdout).contains("/readyz answered 200"));

    // The bind address comes from OUTHOOK_BIND, as in the image; 0.0.0.0 is asked on
    // loopback.
    let port = addr.rsplit_once(':').unwrap().1.to_owned();
    let unspecified = format!("0.0.0.0:{port}");
    let from_env = tokio::task::spawn_blocking(move || {
        run_outhook(&["healthcheck"], &[("OUTHOOK_BIND", &unspecified)])
    })
    .await
    .unwrap();
    assert!(from_env.status.success(), "{}", text(&from_env.stderr));

    // Any answer but 2xx fails the check.
    let unauthorized = run(vec![
        "healthcheck".into(),
        "--url".into(),
        format!("http://{addr}/api/v1/webhooks"),
    ])
    .await
    .unwrap();
    assert!(!unauthorized.status.success());
    assert!(
        text(&unauthorized.stderr).contains("401"),
        "{}",
        text(&unauthorized.stderr)
    );

    app.stop().await;
    let stopped = run(vec![
        "healthcheck".into(),
        "--bind".into(),
        addr.clone(),
        "--timeout".into(),
        "2s".into(),
    ])
    .await
    .unwrap();
    assert!(!stopped.status.success());
    assert!(
        text(&stopped.stderr).contains("did not answer"),
        "{}",
        text(&stopped.stderr)
    );
}

// ---------------------------------------------------------------------------------------
// A placeholder admin token, through the real start.

async fn a_placeholder_admin_token_stops_the_start(backend: Backend) {
    let db = TestDb::new(backend).await;
    for placeholder in [
        "change-me-to-a-long-random-token",
        "your-token-here-0123456789",
        "xxxxxxxxxxxxxxxxxxxxxxxx",
    ] {
        let args = serve_args(&db.url, &["--admin-token", placeholder]);
        let refused = outhook::app::start(&args, std::sync::Arc::new(SystemClock))
            .await
            .err()
            .unwrap_or_else(|| panic!("{placeholder} was accepted as the admin token"));
        let message = format!("{refused:#}");
        assert!(
            message.contains("OUTHOOK_ADMIN_TOKEN") && !message.contains(placeholder),
            "the error names the setting, not the value: {message}"
        );
    }
    // Nothing was stored for any of them: no admin token exists.
    let store = outhook::store::connect(&db.url).await.unwrap();
    assert_eq!(store.count_live_tokens(Role::Admin).await.unwrap(), 0);
    drop(store);

    // A random token of the same length starts.
    let app = TestApp::start_on(db, &["--admin-token", "4f0c9e2b7a1d8e3f6b5a9c0d"], true).await;
    app.stop().await;
}

#[test]
fn the_binary_refuses_a_placeholder_admin_token_and_says_why() {
    let folder = TempDir::new("placeholder");
    let url = format!("sqlite://{}", folder.0.join("o.db").display());
    let out = run_outhook(
        &["serve", "--bind", "127.0.0.1:0", "--database-url", &url],
        &[("OUTHOOK_ADMIN_TOKEN", "change-me-to-a-long-random-token")],
    );
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "outhook served with a placeholder token"
    );
    assert!(
        stderr.contains("OUTHOOK_ADMIN_TOKEN") && stderr.contains("placeholder"),
        "{stderr}"
    );
}

on_both_backends!(a_placeholder_admin_token_stops_the_start);
