//! Objects the API server accepted but ork cannot read (a field out of the range its type
//! holds, say, on a cluster whose CRD schema did not refuse it). The watch keeps going (each
//! object is read behind a `DeserializeGuard`), and the object itself says what is wrong: a
//! condition naming the field, in the same words as `ork validate`, and an Event. Nothing else
//! is done with it.

use std::sync::Arc;

use kube::Resource;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PropagationPolicy,
};
use kube::core::error_boundary::InvalidObject;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType};
use serde_json::{Value, json};
use tracing::warn;

use super::context::Context;
use super::decide::active_jobs;
use super::error::Error;
use crate::api::{Run, Schedule, Workflow};
use crate::driver::{Clock, SystemClock};
use crate::manifest::parse_manifest;
use crate::text;

/// Reports an unreadable Run on itself: phase Failed, condition `Succeeded=False` with reason
/// `InvalidSpec` naming the fields, an Event; and stops what it may still run.
pub async fn report_run(invalid: &InvalidObject, ctx: &Arc<Context>) -> Result<Action, Error> {
    let (namespace, name) = names(invalid)?;
    let raw = get_raw::<Run>(ctx, &namespace, &name).await?;
    let Some(raw) = raw else {
        return Ok(Action::await_change());
    };
    let message = explain("Run", &raw, &invalid.error);
    let already = condition_message(&raw, "Succeeded").as_deref() == Some(message.as_str())
        && raw.pointer("/status/phase").and_then(Value::as_str) == Some("Failed");
    if !already {
        let now = SystemClock.now();
        let patch = json!({"status": {
            "phase": "Failed",
            "finishedAt": now,
            "conditions": [{"type": "Succeeded", "status": "False", "reason": "InvalidSpec",
                            "message": message, "lastTransitionTime": now}],
        }});
        write_status::<Run>(ctx, &namespace, &name, &patch).await;
        publish::<Run>(ctx, invalid, &namespace, &name, "InvalidSpec", &message).await;
    }
    stop_jobs(
        ctx,
        &namespace,
        &name,
        invalid.metadata.uid.as_deref().unwrap_or_default(),
    )
    .await;
    Ok(Action::await_change())
}

/// Reports an unreadable Workflow on itself: `Valid=False` naming the fields, and an Event.
pub async fn report_workflow(invalid: &InvalidObject, ctx: &Arc<Context>) -> Result<Action, Error> {
    let (namespace, name) = names(invalid)?;
    let raw = get_raw::<Workflow>(ctx, &namespace, &name).await?;
    let Some(raw) = raw else {
        return Ok(Action::await_change());
    };
    let message = explain("Workflow", &raw, &invalid.error);
    if condition_message(&raw, "Valid").as_deref() != Some(message.as_str()) {
        let patch = json!({"status": {
            "observedGeneration": invalid.metadata.generation,
            "conditions": [{"type": "Valid", "status": "False", "reason": "Invalid",
                            "message": message, "lastTransitionTime": SystemClock.now(),
                            "observedGeneration": invalid.metadata.generation}],
        }});
        write_status::<Workflow>(ctx, &namespace, &name, &patch).await;
        publish::<Workflow>(ctx, invalid, &namespace, &name, "Invalid", &message).await;
    }
    Ok(Action::await_change())
}

/// Reports an unreadable Schedule on itself: `Valid=False` naming the fields, and an Event.
/// It makes no Runs.
pub async fn report_schedule(invalid: &InvalidObject, ctx: &Arc<Context>) -> Result<Action, Error> {
    let (namespace, name) = names(invalid)?;
    let raw = get_raw::<Schedule>(ctx, &namespace, &name).await?;
    let Some(raw) = raw else {
        return Ok(Action::await_change());
    };
    let message = explain("Schedule", &raw, &invalid.error);
    if condition_message(&raw, "Valid").as_deref() != Some(message.as_str()) {
        let patch = json!({"status": {
            "observedGeneration": invalid.metadata.generation,
            "nextScheduleTime": null,
            "conditions": [{"type": "Valid", "status": "False", "reason": "Invalid",
                            "message": message, "lastTransitionTime": SystemClock.now(),
                            "observedGeneration": invalid.metadata.generation}],
        }});
        write_status::<Schedule>(ctx, &namespace, &name, &patch).await;
        publish::<Schedule>(ctx, invalid, &namespace, &name, "InvalidSchedule", &message).await;
    }
    Ok(Action::await_change())
}

fn names(invalid: &InvalidObject) -> Result<(String, String), Error> {
    let name = invalid.metadata.name.clone().unwrap_or_default();
    let namespace = invalid
        .metadata
        .namespace
        .clone()
        .ok_or_else(|| Error::NoNamespace {
            kind: "object",
            name: name.clone(),
        })?;
    Ok((namespace, name))
}

fn api_resource<K: Resource<DynamicType = ()>>() -> ApiResource {
    ApiResource::erase::<K>(&())
}

/// The object as stored, without reading it into ork's types.
async fn get_raw<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Option<Value>, Error> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), namespace, &api_resource::<K>());
    let Some(object) = api.get_opt(name).await? else {
        return Ok(None);
    };
    serde_json::to_value(&object)
        .map(Some)
        .map_err(|source| Error::Encode {
            what: "an unreadable object",
            source,
        })
}

/// What is wrong, in the words of `ork validate`, naming each field; the library's own words
/// only if the manifest reader finds nothing (it always should).
fn explain(kind: &str, raw: &Value, fallback: &str) -> String {
    let mut document = raw.clone();
    if let Some(fields) = document.as_object_mut() {
        // Written by the API server and ork, not by the user; checked on their own below.
        fields.remove("status");
        if let Some(meta) = fields.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
        }
    }
    let mut problems: Vec<String> = match parse_manifest(document) {
        Ok(_) => Vec::new(),
        Err(problems) => problems.iter().map(ToString::to_string).collect(),
    };
    if problems.is_empty() {
        problems.push(format!(
            "its status cannot be read ({})",
            text::cap(fallback.to_string(), 1024)
        ));
    }
    text::cap_message(format!(
        "ork cannot read this {kind}: {}",
        problems.join("; ")
    ))
}

fn condition_message(raw: &Value, type_: &str) -> Option<String> {
    raw.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))?
        .get("message")?
        .as_str()
        .map(str::to_string)
}

/// Best effort: if even this is refused (a status the schema rejects), the Event still says
/// what is wrong, and nothing is retried.
async fn write_status<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    namespace: &str,
    name: &str,
    patch: &Value,
) {
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), namespace, &api_resource::<K>());
    if let Err(e) = api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        warn!(%namespace, %name, error = %e, "cannot record why an object is unreadable");
    }
}

async fn publish<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    invalid: &InvalidObject,
    namespace: &str,
    name: &str,
    reason: &str,
    message: &str,
) {
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        uid: invalid.metadata.uid.clone(),
        resource_version: invalid.metadata.resource_version.clone(),
        ..Default::default()
    };
    let event = KubeEvent {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(message.to_string()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &reference).await {
        warn!(%namespace, %name, error = %e, "cannot publish event");
    }
}

/// A run that cannot be read will not record anything more: stop what it still runs.
async fn stop_jobs(ctx: &Context, namespace: &str, name: &str, uid: &str) {
    let stop = ctx.with_children(namespace, name, |jobs, pods| active_jobs(uid, jobs, pods));
    let api: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(ctx.client.clone(), namespace);
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    for job in stop {
        if let Err(e) = api.delete(&job, &params).await {
            warn!(%job, error = %e, "cannot stop a Job of an unreadable Run");
        }
    }
}
