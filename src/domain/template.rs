//! Custom payload templates: minijinja, sandboxed (no file or network access, bounded
//! work, output and recursion). The event or batch is the context.
//!
//! Memory is not bounded here: minijinja has no hook for it, and one `~` can double a
//! string. Deliveries render in a child process with a memory limit
//! (`crate::dispatch::sandbox`); this module holds what that process runs.

use std::collections::HashSet;
use std::sync::Arc;

use minijinja::machinery::{self, Instruction};
use minijinja::value::{Enumerator, Object, ObjectRepr, Value};
use minijinja::{Environment, ErrorKind, Template, UndefinedBehavior};

/// The largest template accepted.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;
/// The largest rendered output.
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
/// Work a render may do before it is stopped (a loop that never ends fails instead).
const FUEL: u64 = 1_000_000;

/// Why a template is refused or did not render. Its text is what users see (in the API's
/// error, or as a delivery's reason); it names the template's line when known.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("a template may be at most {MAX_TEMPLATE_BYTES} bytes")]
    TooLarge,
    /// minijinja refused the template (a syntax error) or stopped its render (out of fuel,
    /// a division by zero, …).
    #[error("{}{reason}", Line(*.line))]
    Minijinja { line: Option<usize>, reason: String },
    /// A filter, test or function the environment does not have.
    #[error("{}unknown {kind} '{name}'", Line(*.line))]
    UnknownName {
        line: Option<usize>,
        kind: NameKind,
        name: String,
    },
    #[error("the rendered output is over {MAX_OUTPUT_BYTES} bytes")]
    OutputTooLarge,
    #[error("the template rendered text that is not UTF-8")]
    NotUtf8,
    /// A stored event of the batch is not JSON.
    #[error("event {index} of the batch: {source}")]
    Event {
        index: usize,
        source: serde_json::Error,
    },
}

/// What kind of name a template calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Filter,
    Test,
    Function,
}

impl std::fmt::Display for NameKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NameKind::Filter => "filter",
            NameKind::Test => "test",
            NameKind::Function => "function",
        })
    }
}

/// `line N: ` before a reason, when the line is known.
struct Line(Option<usize>);

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(line) => write!(f, "line {line}: "),
            None => Ok(()),
        }
    }
}

/// The environment every template compiles and renders in.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(64);
    // `{{ event.entity.owner.name }}` is empty, not an error, for an entity without owner.
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env
}

/// Checks that a template is at most [`MAX_TEMPLATE_BYTES`] and parses; the error names
/// the line. What every stored template satisfies.
pub fn check(source: &str) -> Result<(), TemplateError> {
    if source.len() > MAX_TEMPLATE_BYTES {
        return Err(TemplateError::TooLarge);
    }
    let env = environment();
    env.template_from_str(source).map(|_| ()).map_err(describe)
}

/// Checks, besides [`check`], that a template uses only filters, tests and functions that
/// exist (minijinja finds an unknown one only when rendering reaches it, so it would fail
/// the first delivery instead). Applied when a template is written: a template stored
/// before this check still loads, and fails when rendered.
pub fn check_written(source: &str) -> Result<(), TemplateError> {
    check(source)?;
    let env = environment();
    let template = env.template_from_str(source).map_err(describe)?;
    check_names(&env, &template)
}

/// Every filter, test and function call of the compiled template, looked up where the
/// renderer would look it up.
fn check_names(env: &Environment<'_>, template: &Template<'_, '_>) -> Result<(), TemplateError> {
    let compiled = machinery::get_compiled_template(template);
    let all = || std::iter::once(&compiled.instructions).chain(compiled.blocks.values());
    // A function may be a global (`range`, `namespace`…), `loop` in a recursive loop, or a
    // name the template binds itself (`{% set f = range %}`).
    let mut callable: HashSet<String> = env.globals().map(|(name, _)| name.to_owned()).collect();
    callable.insert("loop".into());
    for instructions in all() {
        for (_, instruction) in each(instructions) {
            if let Instruction::StoreLocal(name) = instruction {
                callable.insert((*name).to_owned());
            }
        }
    }
    for instructions in all() {
        for (idx, instruction) in each(instructions) {
            let unknown = match instruction {
                Instruction::ApplyFilter(name, ..) => probe_fails(
                    env,
                    &format!("{{{{ none | {name} }}}}"),
                    ErrorKind::UnknownFilter,
                )
                .then_some((NameKind::Filter, name)),
                Instruction::PerformTest(name, ..) => probe_fails(
                    env,
                    &format!("{{{{ none is {name} }}}}"),
                    ErrorKind::UnknownTest,
                )
                .then_some((NameKind::Test, name)),
                Instruction::CallFunction(name, _) if !callable.contains(*name) => {
                    Some((NameKind::Function, name))
                }
                _ => None,
            };
            if let Some((kind, name)) = unknown {
                return Err(TemplateError::UnknownName {
                    line: instructions.get_line(idx),
                    kind,
                    name: (*name).to_owned(),
                });
            }
        }
    }
    Ok(())
}

/// The instructions of a compiled template with their indexes.
fn each<'i, 's>(
    instructions: &'i machinery::Instructions<'s>,
) -> impl Iterator<Item = (u32, &'i Instruction<'s>)> {
    (0..).map_while(move |idx| instructions.get(idx).map(|i| (idx, i)))
}

/// Whether a one-line template fails with `kind`: the environment's own answer to
/// whether it has a filter or a test of a name (applied to `none` without arguments, any
/// other outcome means it exists).
fn probe_fails(env: &Environment<'_>, probe: &str, kind: ErrorKind) -> bool {
    env.render_str(probe, ()).is_err_and(|e| e.kind() == kind)
}

/// Renders a compiled template with `context`, stopping as soon as the output passes
/// [`MAX_OUTPUT_BYTES`] (the output is written piece by piece, never held past the bound).
pub fn render_bounded(
    template: &Template<'_, '_>,
    context: Value,
) -> Result<String, TemplateError> {
    let mut out = BoundedOutput::default();
    match template.render_captured_to(context, &mut out) {
        Ok(_) => String::from_utf8(out.bytes).map_err(|_| TemplateError::NotUtf8),
        Err(_) if out.overflowed => Err(TemplateError::OutputTooLarge),
        Err(err) => Err(describe(err)),
    }
}

/// A writer that refuses the write that would take it past [`MAX_OUTPUT_BYTES`].
#[derive(Default)]
struct BoundedOutput {
    bytes: Vec<u8>,
    overflowed: bool,
}

impl std::io::Write for BoundedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_OUTPUT_BYTES {
            self.overflowed = true;
            return Err(std::io::Error::other("output bound reached"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What a template sees: `event` (the first, or only, event), `events` (the batch, each
/// event as published plus `webhookName`) and `webhook` (`name`, `type`). `events` are
/// the stored event bodies (JSON objects).
pub fn context<'a>(
    webhook_name: &str,
    webhook_type: &str,
    events: impl IntoIterator<Item = &'a str>,
) -> Result<serde_json::Value, TemplateError> {
    let values = events
        .into_iter()
        .enumerate()
        .map(|(index, body)| {
            let mut value: serde_json::Value = serde_json::from_str(body)
                .map_err(|source| TemplateError::Event { index, source })?;
            if let Some(object) = value.as_object_mut() {
                object.insert("webhookName".into(), webhook_name.into());
            }
            Ok(value)
        })
        .collect::<Result<Vec<_>, TemplateError>>()?;
    Ok(serde_json::json!({
        "event": values.first().cloned().unwrap_or(serde_json::Value::Null),
        "events": values,
        "webhook": {"name": webhook_name, "type": webhook_type},
    }))
}

/// A JSON document as a template context. Values are read where the template looks and
/// only then copied, so a render costs what the template touches rather than a copy of a
/// whole batch.
pub fn json_context(document: Arc<serde_json::Value>) -> Value {
    JsonNode {
        root: document,
        path: Vec::new(),
    }
    .into_value()
}

/// An object or array inside a shared JSON document, by its path from the root.
#[derive(Debug)]
struct JsonNode {
    root: Arc<serde_json::Value>,
    path: Vec<Step>,
}

#[derive(Debug, Clone)]
enum Step {
    Key(Arc<str>),
    Index(usize),
}

impl JsonNode {
    fn node(&self) -> &serde_json::Value {
        self.path
            .iter()
            .try_fold(&*self.root, |node, step| match step {
                Step::Key(key) => node.get(&**key),
                Step::Index(i) => node.get(*i),
            })
            .unwrap_or(&serde_json::Value::Null)
    }

    fn child(&self, step: Step) -> Value {
        let mut path = self.path.clone();
        path.push(step);
        JsonNode {
            root: self.root.clone(),
            path,
        }
        .into_value()
    }

    fn into_value(self) -> Value {
        use serde_json::Value as Json;
        match self.node() {
            Json::Null => Value::from(()),
            Json::Bool(b) => Value::from(*b),
            Json::Number(n) => n
                .as_i64()
                .map(Value::from)
                .or_else(|| n.as_u64().map(Value::from))
                .unwrap_or_else(|| Value::from(n.as_f64().unwrap_or(f64::NAN))),
            Json::String(s) => Value::from(s.as_str()),
            Json::Array(_) | Json::Object(_) => Value::from_object(self),
        }
    }
}

impl Object for JsonNode {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        if self.node().is_array() {
            ObjectRepr::Seq
        } else {
            ObjectRepr::Map
        }
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match self.node() {
            serde_json::Value::Object(map) => {
                let key = key.as_str()?;
                map.contains_key(key)
                    .then(|| self.child(Step::Key(key.into())))
            }
            serde_json::Value::Array(items) => {
                let index = key.as_usize()?;
                (index < items.len()).then(|| self.child(Step::Index(index)))
            }
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        match self.node() {
            serde_json::Value::Object(map) => {
                Enumerator::Values(map.keys().map(|k| Value::from(k.as_str())).collect())
            }
            serde_json::Value::Array(items) => Enumerator::Seq(items.len()),
            _ => Enumerator::Empty,
        }
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        match self.node() {
            serde_json::Value::Object(map) => Some(map.len()),
            serde_json::Value::Array(items) => Some(items.len()),
            _ => Some(0),
        }
    }
}

/// True when a string uses template syntax.
pub fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%")
}

/// A minijinja error as one line, with the template line when known.
pub fn describe(err: minijinja::Error) -> TemplateError {
    TemplateError::Minijinja {
        line: err.line(),
        reason: err
            .detail()
            .map(str::to_owned)
            .unwrap_or_else(|| err.kind().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(source: &str, context: serde_json::Value) -> Result<String, String> {
        let env = environment();
        let template = env.template_from_str(source).map_err(describe);
        template
            .and_then(|template| render_bounded(&template, json_context(Arc::new(context))))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn parse_errors_name_the_line() {
        let err = check("{\n  \"a\": {{ event.eventType }},\n  \"b\": {{ event.entity.name \n}")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("line 3") || err.starts_with("line 4"),
            "{err}"
        );
        assert!(check("{{ event.eventType | tojson }}").is_ok());
    }

    #[test]
    fn unknown_filters_tests_and_functions_are_found_before_rendering() {
        for (source, expected) in [
            (
                "{{ x | nosuchfilter }}",
                "line 1: unknown filter 'nosuchfilter'",
            ),
            (
                "{% if false %}\n{{ x | upper | nosuch(1) }}{% endif %}",
                "line 2: unknown filter 'nosuch'",
            ),
            (
                "{% if x is nosuchtest %}{% endif %}",
                "unknown test 'nosuchtest'",
            ),
            (
                "{{ nosuchfunction(1) }}",
                "unknown function 'nosuchfunction'",
            ),
            ("{{ event() }}", "unknown function 'event'"),
        ] {
            assert!(check(source).is_ok(), "{source} parses");
            let err = check_written(source).unwrap_err().to_string();
            assert!(err.contains(expected), "{source}: {err}");
        }
        for known in [
            "{{ x | tojson }}{{ x | default('a') | upper }}{{ x | batch(2) | list }}",
            "{% if x is defined and x is not none %}{% endif %}",
            "{% set ns = namespace(n=0) %}{% for i in range(3) %}{% endfor %}{{ dict(a=1) }}",
            "{% set f = range %}{{ f(2) | list }}",
            "{% for e in events recursive %}{{ loop(e.children) }}{% endfor %}",
        ] {
            assert!(
                check_written(known).is_ok(),
                "{known}: {:?}",
                check_written(known)
            );
        }
    }

    #[test]
    fn renders_with_the_event_and_stays_bounded() {
        let ctx = json!({"event": {"eventType": "entityCreated", "entity": {"name": "t"}}});
        let out = render(
            r#"{"kind": {{ event.eventType | tojson }}, "owner": "{{ event.entity.owner.name }}"}"#,
            ctx.clone(),
        )
        .unwrap();
        assert_eq!(out, r#"{"kind": "entityCreated", "owner": ""}"#);
        let err = render(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            ctx.clone(),
        )
        .unwrap_err();
        assert!(err.contains("fuel") || err.contains("out of"), "{err}");
        assert!(render("{{ 1 / 0 }}", ctx.clone()).is_err());
        // Output stops at the bound, not after the loop.
        let err = render(
            "{% for i in range(100000) %}0123456789abcdef{% endfor %}",
            ctx.clone(),
        )
        .unwrap_err();
        assert!(err.contains("over 1048576 bytes"), "{err}");
    }

    #[test]
    fn the_json_context_reads_like_the_document() {
        let doc = json!({
            "event": {"n": 1, "big": 18446744073709551615u64, "f": 1.5, "t": true, "z": null,
                      "tags": [{"tagFQN": "A"}, {"tagFQN": "B"}], "entity": {"name": "x", "k": {}}},
            "events": [{"id": 1}, {"id": 2}, {"id": 3}],
        });
        let whole = render("{{ event | tojson }}", doc.clone()).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&whole).unwrap(),
            doc["event"]
        );
        for (source, expected) in [
            ("{{ events | map(attribute='id') | join(',') }}", "1,2,3"),
            (
                "{{ events[-1].id }} {{ events | length }} {{ event.tags[1].tagFQN }}",
                "3 3 B",
            ),
            (
                "{{ event.big }} {{ event.f }} {{ event.t }} {{ event.z is none }}",
                "18446744073709551615 1.5 True True",
            ),
            (
                "{% for k, v in event.entity | items %}{{ k }};{% endfor %}",
                "k;name;",
            ),
            (
                "{{ 'name' in event.entity }} {{ event.missing.deeper }}|{{ event.entity.k | length }}",
                "True |0",
            ),
            (
                "{{ events | selectattr('id', 'gt', 1) | map(attribute='id') | list | tojson }}",
                "[2, 3]",
            ),
        ] {
            assert_eq!(render(source, doc.clone()).unwrap(), expected, "{source}");
        }
    }
}
