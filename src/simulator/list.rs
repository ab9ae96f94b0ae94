//! The simulator's `ListInstanceTasks`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use wiremock::{Request, ResponseTemplate};

use super::server::Shared;
use crate::model::{InstanceTask, TaskTime};

/// `ListInstanceTasks`: the instance's tasks as each was last seen (PENDING before its first
/// poll), without progress, newest first; `limit` a page (500 by default), the page after
/// `marker` (a task id) when given, and `count` every task of the instance.
pub(super) fn list_tasks(shared: &Shared, instance: &str, request: &Request) -> ResponseTemplate {
    let query: HashMap<String, String> = request.url.query_pairs().into_owned().collect();
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(500)
        .clamp(1, shared.list_page.load(Ordering::Relaxed).max(1));
    shared.list_pages.fetch_add(1, Ordering::Relaxed);
    let mut listed: Vec<InstanceTask> = {
        let mut tasks = shared
            .tasks
            .lock()
            .expect("the task table is never poisoned");
        tasks
            .iter_mut()
            .filter(|((of, _), _)| of == instance)
            .map(|((_, id), state)| state.listed(id))
            .collect()
    };
    // Newest first; tasks created at once by id, so that pages follow one order.
    listed.sort_by(|a, b| {
        let key = |t: &InstanceTask| {
            (
                t.create_time.as_ref().and_then(TaskTime::timestamp),
                t.task_id.clone(),
            )
        };
        key(b).cmp(&key(a))
    });
    let count = listed.len();
    let start = query.get("marker").map_or(0, |marker| {
        listed
            .iter()
            .position(|t| t.task_id.as_deref() == Some(marker.as_str()))
            .map_or(count, |at| at + 1)
    });
    let page: Vec<&InstanceTask> = listed.iter().skip(start).take(limit).collect();
    let marker = page.last().and_then(|t| t.task_id.clone());
    let body = serde_json::json!({
        "tasks": page,
        "page": {"count": count, "marker": marker},
    });
    ResponseTemplate::new(200).set_body_raw(body.to_string(), "application/json")
}
