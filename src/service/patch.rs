//! A JSON Patch (RFC 6902) on a webhook: applied to the webhook as the API shows it, then
//! read back like a create. Server-owned fields are read-only except `status`, which may
//! be set to `active` (resume delivery) or `disabled`. Nothing changes unless the whole
//! patch applies.

use serde_json::Value;

use super::webhooks::parse_webhook_spec;
use super::{Result, ServiceError};
use crate::domain::webhook::{Resume, Webhook, WebhookSpec};

/// The spec `patch` makes of `current` (as shown with `base` as the start of its `href`),
/// and whether it asks for delivery to resume.
pub fn patched(
    current: &Webhook,
    patch: &json_patch::Patch,
    base: &str,
) -> Result<(WebhookSpec, Resume)> {
    let before = serde_json::to_value(current.view(base)).map_err(anyhow::Error::from)?;
    let mut doc = before.clone();
    json_patch::patch(&mut doc, &patch.0).map_err(patch_error)?;
    let resume = patched_status(&before, &mut doc)?;
    for field in WebhookSpec::SERVER_OWNED {
        if before.get(*field) != doc.get(*field) {
            return Err(ServiceError::invalid(
                *field,
                "is set by the server and cannot be patched",
            ));
        }
    }
    Ok((parse_webhook_spec(doc)?, resume))
}

/// `status` is the one server-owned field a patch may set: `active` resumes delivery,
/// `disabled` is `enabled: false`. Rewrites the document so the rest of the checks see
/// the status unchanged and `enabled` as it must be.
fn patched_status(before: &Value, doc: &mut Value) -> Result<Resume> {
    if before.get("status") == doc.get("status") {
        return Ok(Resume::No);
    }
    let wanted = doc.get("status").and_then(Value::as_str).unwrap_or("");
    let enabled = match wanted {
        "active" => true,
        "disabled" => false,
        _ => {
            return Err(ServiceError::invalid(
                "status",
                "can only be set to 'active' (resume delivery) or 'disabled'",
            ));
        }
    };
    if doc.get("enabled") != before.get("enabled")
        && doc.get("enabled") != Some(&Value::Bool(enabled))
    {
        return Err(ServiceError::invalid(
            "enabled",
            format!("contradicts status '{wanted}'"),
        ));
    }
    doc["enabled"] = Value::Bool(enabled);
    doc["status"] = before["status"].clone();
    Ok(if enabled { Resume::Yes } else { Resume::No })
}

fn patch_error(err: json_patch::PatchError) -> ServiceError {
    match err.kind {
        json_patch::PatchErrorKind::TestFailed => ServiceError::Conflict(format!(
            "JSON Patch operation {} (test) failed; nothing was changed",
            err.operation
        )),
        _ => ServiceError::invalid(
            format!("patch[{}]", err.operation),
            format!("cannot be applied at '{}': {}", err.path, err.kind),
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::webhook::WebhookStatus;

    fn webhook(status: WebhookStatus) -> Webhook {
        let spec = parse_webhook_spec(json!({
            "name": "w", "webhookType": "Generic",
            "eventFilters": [{"eventType": "entityCreated"}],
            "webhookConfig": {"endpoint": "https://example.com/hook"}
        }))
        .unwrap();
        let mut webhook = Webhook::create(spec, "admin", 1_000);
        webhook.status = status;
        webhook
    }

    fn patch(ops: serde_json::Value) -> json_patch::Patch {
        serde_json::from_value(ops).unwrap()
    }

    fn refused_field(result: Result<(WebhookSpec, Resume)>) -> String {
        match result {
            Err(ServiceError::Invalid { field, .. }) => field,
            Err(other) => panic!("refused otherwise: {other}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn a_patch_changes_what_users_write() {
        let current = webhook(WebhookStatus::Active);
        let ops = patch(json!([{"op": "replace", "path": "/batchSize", "value": 5}]));
        let (spec, resume) = patched(&current, &ops, "http://h").unwrap();
        assert_eq!((spec.batch_size.get(), resume), (5, Resume::No));
    }

    #[test]
    fn status_active_resumes_and_disabled_disables() {
        let failed = webhook(WebhookStatus::RetryLimitReached);
        let ops = patch(json!([{"op": "replace", "path": "/status", "value": "active"}]));
        let (spec, resume) = patched(&failed, &ops, "http://h").unwrap();
        assert_eq!((spec.enabled, resume), (true, Resume::Yes));

        let ops = patch(json!([{"op": "replace", "path": "/status", "value": "disabled"}]));
        let (spec, resume) = patched(&failed, &ops, "http://h").unwrap();
        assert_eq!((spec.enabled, resume), (false, Resume::No));

        let ops = patch(json!([
            {"op": "replace", "path": "/status", "value": "active"},
            {"op": "replace", "path": "/enabled", "value": false}
        ]));
        assert_eq!(refused_field(patched(&failed, &ops, "http://h")), "enabled");
        let ops = patch(json!([{"op": "replace", "path": "/status", "value": "failed"}]));
        assert_eq!(refused_field(patched(&failed, &ops, "http://h")), "status");
    }

    #[test]
    fn server_owned_fields_are_read_only() {
        let current = webhook(WebhookStatus::Active);
        for (path, value) in [
            ("/version", json!(9.9)),
            ("/href", json!("http://elsewhere/x")),
            ("/deleted", json!(true)),
        ] {
            let ops = patch(json!([{"op": "replace", "path": path, "value": value}]));
            assert_eq!(
                refused_field(patched(&current, &ops, "http://h")),
                path.trim_start_matches('/'),
            );
        }
    }

    #[test]
    fn a_failed_test_operation_is_a_conflict_and_a_bad_path_names_the_operation() {
        let current = webhook(WebhookStatus::Active);
        let ops = patch(json!([{"op": "test", "path": "/name", "value": "other"}]));
        assert!(matches!(
            patched(&current, &ops, "http://h"),
            Err(ServiceError::Conflict(_))
        ));
        let ops = patch(json!([
            {"op": "replace", "path": "/batchSize", "value": 2},
            {"op": "remove", "path": "/nothing/here"}
        ]));
        assert_eq!(
            refused_field(patched(&current, &ops, "http://h")),
            "patch[1]"
        );
    }
}
