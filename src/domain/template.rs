//! Custom payload templates: minijinja, sandboxed (no file or network access, bounded
//! work, output and recursion). The event or batch is the context.

use minijinja::{Environment, UndefinedBehavior};

/// The largest template accepted.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;
/// The largest rendered output.
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
/// Work a render may do before it is stopped (a loop that never ends fails instead).
const FUEL: u64 = 1_000_000;

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(64);
    // `{{ event.entity.owner.name }}` is empty, not an error, for an entity without owner.
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env
}

/// Checks that a template parses; the error names the line.
pub fn check(source: &str) -> Result<(), String> {
    if source.len() > MAX_TEMPLATE_BYTES {
        return Err(format!(
            "a template may be at most {MAX_TEMPLATE_BYTES} bytes"
        ));
    }
    let env = environment();
    env.template_from_str(source).map(|_| ()).map_err(describe)
}

/// Renders a template with `context`.
pub fn render(source: &str, context: &serde_json::Value) -> Result<String, String> {
    let env = environment();
    let template = env.template_from_str(source).map_err(describe)?;
    let out = template
        .render(minijinja::value::Serde(context))
        .map_err(describe)?;
    if out.len() > MAX_OUTPUT_BYTES {
        return Err(format!(
            "the rendered body is over {MAX_OUTPUT_BYTES} bytes"
        ));
    }
    Ok(out)
}

/// True when a string uses template syntax.
pub fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%")
}

fn describe(err: minijinja::Error) -> String {
    let reason = err
        .detail()
        .map(str::to_owned)
        .unwrap_or_else(|| err.kind().to_string());
    match err.line() {
        Some(line) => format!("line {line}: {reason}"),
        None => reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parse_errors_name_the_line() {
        let err = check("{\n  \"a\": {{ event.eventType }},\n  \"b\": {{ event.entity.name \n}")
            .unwrap_err();
        assert!(
            err.starts_with("line 3") || err.starts_with("line 4"),
            "{err}"
        );
        assert!(check("{{ event.eventType | tojson }}").is_ok());
    }

    #[test]
    fn renders_with_the_event_and_stays_bounded() {
        let ctx = json!({"event": {"eventType": "entityCreated", "entity": {"name": "t"}}});
        let out = render(
            r#"{"kind": {{ event.eventType | tojson }}, "owner": "{{ event.entity.owner.name }}"}"#,
            &ctx,
        )
        .unwrap();
        assert_eq!(out, r#"{"kind": "entityCreated", "owner": ""}"#);
        let err = render(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            &ctx,
        )
        .unwrap_err();
        assert!(err.contains("fuel") || err.contains("out of"), "{err}");
        assert!(render("{{ 1 / 0 }}", &ctx).is_err());
    }
}
