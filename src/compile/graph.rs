//! Linear-time graph checks: topological order, cycle reporting and input reachability.

use super::dag::{Adjacency, CompiledTask, InputSource, TaskId};
use crate::problem::Problems;

/// Kahn's algorithm. On a cycle, returns the cycles found among the tasks that could not be
/// ordered: each as the list of tasks on it, every task depending on the next.
pub(crate) fn topological_order(
    children: &Adjacency,
    parents: &Adjacency,
) -> Result<Vec<TaskId>, Vec<Vec<TaskId>>> {
    let n = parents.len();
    let mut remaining: Vec<u32> = (0..n)
        .map(|i| parents.of(TaskId(i as u32)).len() as u32)
        .collect();
    let mut order: Vec<TaskId> = (0..n as u32)
        .map(TaskId)
        .filter(|id| remaining[id.index()] == 0)
        .collect();
    let mut next = 0;
    while next < order.len() {
        let id = order[next];
        next += 1;
        for &child in children.of(id) {
            remaining[child.index()] -= 1;
            if remaining[child.index()] == 0 {
                order.push(child);
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    Err(find_cycles(parents, &remaining))
}

/// Every task left over by Kahn's algorithm has a left-over parent, so walking from one to a
/// left-over parent must come back to a task seen on the same walk: that stretch is a cycle. A
/// walk that reaches a task seen on an earlier walk ends (its cycle is already reported), so each
/// task is visited once.
fn find_cycles(parents: &Adjacency, remaining: &[u32]) -> Vec<Vec<TaskId>> {
    const UNSEEN: u32 = u32::MAX;
    let mut walk_of = vec![UNSEEN; remaining.len()];
    let mut cycles = Vec::new();
    for start in 0..remaining.len() {
        if remaining[start] == 0 || walk_of[start] != UNSEEN {
            continue;
        }
        let walk = start as u32;
        let mut path = Vec::new();
        let mut node = TaskId(start as u32);
        loop {
            if walk_of[node.index()] == walk {
                let from = path.iter().position(|&n| n == node).unwrap_or(0);
                cycles.push(path.split_off(from));
                break;
            }
            if walk_of[node.index()] != UNSEEN {
                break;
            }
            walk_of[node.index()] = walk;
            path.push(node);
            match parents.of(node).iter().find(|p| remaining[p.index()] > 0) {
                Some(&parent) => node = parent,
                None => break, // unreachable for a left-over task; stop rather than loop
            }
        }
    }
    cycles
}

/// Checks that every `fromTask` input names a direct or transitive dependency. Direct parents
/// are the common case and cost one lookup. Otherwise a search climbs from the consumer through
/// its ancestors, pruned by topological position: a task placed before the source cannot have
/// the source as an ancestor.
pub(crate) fn check_inputs_upstream(
    tasks: &[CompiledTask],
    parents: &Adjacency,
    order: &[TaskId],
    base: &str,
    problems: &mut Problems,
) {
    let mut position = vec![0u32; tasks.len()];
    for (pos, id) in order.iter().enumerate() {
        position[id.index()] = pos as u32;
    }
    // Generation-stamped marks avoid clearing arrays between searches.
    let mut visited = vec![0u32; tasks.len()];
    let mut generation = 0u32;
    let mut stack = Vec::new();
    for (i, task) in tasks.iter().enumerate() {
        let consumer = TaskId(i as u32);
        for input in &task.inputs {
            let InputSource::Task { task: source, .. } = &input.source else {
                continue;
            };
            let source = *source;
            if source == consumer || parents.of(consumer).contains(&source) {
                continue;
            }
            let floor = position[source.index()];
            let mut found = false;
            if floor < position[consumer.index()] {
                generation += 1;
                stack.clear();
                stack.push(consumer);
                while let Some(node) = stack.pop() {
                    for &p in parents.of(node) {
                        if p == source {
                            found = true;
                            break;
                        }
                        if visited[p.index()] != generation && position[p.index()] > floor {
                            visited[p.index()] = generation;
                            stack.push(p);
                        }
                    }
                    if found {
                        break;
                    }
                }
            }
            if !found {
                problems.push(
                    format!("{base}.tasks[{i}].inputs"),
                    format!(
                        "task {:?}: input {:?} reads task {:?}, which is not upstream \
                         (add it to dependsOn, directly or through another task)",
                        task.name,
                        input.name,
                        tasks[source.index()].name
                    ),
                );
            }
        }
    }
}
