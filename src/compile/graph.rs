//! Linear-time graph checks: topological order, cycle reporting and input reachability.

use super::dag::{Adjacency, TaskId};
use crate::api::TaskSpec;
use crate::problem::Problems;
use crate::text::quoted;

/// A dependency cycle, one per strongly connected group of tasks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cycle {
    /// The tasks on the cycle, each depending on the next and the last on the first, starting
    /// with the one declared first.
    pub(crate) tasks: Vec<TaskId>,
    /// The other tasks of the same group, in declaration order: each is on a further cycle
    /// through the tasks above.
    pub(crate) others: Vec<TaskId>,
}

/// A `fromTask` input or a `when` entry naming another task that exists: `source` must be an
/// ancestor of `consumer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TaskRef {
    pub(crate) consumer: TaskId,
    /// Where in the consumer: an input or a `when` entry, and its index.
    pub(crate) place: RefPlace,
    pub(crate) source: TaskId,
}

/// Where a task names another task whose output it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum RefPlace {
    Input(usize),
    When(usize),
    ForEach,
}

/// Kahn's algorithm. On a cycle, returns one cycle for every strongly connected group of tasks
/// that could not be ordered, so that independent cycles are all reported at once.
pub(crate) fn topological_order(
    children: &Adjacency,
    parents: &Adjacency,
) -> Result<Vec<TaskId>, Vec<Cycle>> {
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

/// The tasks Kahn's algorithm left over are those on a cycle or downstream of one. Their
/// strongly connected groups (Tarjan's algorithm, iterative so a long cycle cannot overflow the
/// stack) of more than one task are exactly the knots of cycles; a task merely downstream of a
/// cycle is a group of its own and is not reported. In each group, walking from task to a parent
/// in the same group must come back to a task seen on the walk: that stretch is a cycle. Every
/// step is linear in the size of the graph.
fn find_cycles(parents: &Adjacency, remaining: &[u32]) -> Vec<Cycle> {
    const UNSEEN: u32 = u32::MAX;
    let n = remaining.len();
    let left = |id: TaskId| remaining[id.index()] > 0;

    // Tarjan: `visit_order` numbers tasks as first reached, `low` is the smallest number
    // reachable from a task's subtree through tasks still on `stack`.
    let mut visit_order = vec![UNSEEN; n];
    let mut low = vec![0u32; n];
    let mut on_stack = vec![false; n];
    let mut stack: Vec<TaskId> = Vec::new();
    let mut frames: Vec<(TaskId, usize)> = Vec::new();
    let mut counter = 0u32;
    let mut groups: Vec<Vec<TaskId>> = Vec::new();
    macro_rules! enter {
        ($id:expr) => {{
            let id: TaskId = $id;
            visit_order[id.index()] = counter;
            low[id.index()] = counter;
            counter += 1;
            stack.push(id);
            on_stack[id.index()] = true;
            frames.push((id, 0));
        }};
    }
    for start in (0..n as u32).map(TaskId) {
        if !left(start) || visit_order[start.index()] != UNSEEN {
            continue;
        }
        enter!(start);
        while let Some(frame) = frames.last_mut() {
            let (node, next) = *frame;
            if let Some(&parent) = parents.of(node).get(next) {
                frame.1 += 1;
                if !left(parent) {
                    continue;
                }
                if visit_order[parent.index()] == UNSEEN {
                    enter!(parent);
                } else if on_stack[parent.index()] {
                    low[node.index()] = low[node.index()].min(visit_order[parent.index()]);
                }
                continue;
            }
            frames.pop();
            if let Some(&(up, _)) = frames.last() {
                low[up.index()] = low[up.index()].min(low[node.index()]);
            }
            if low[node.index()] == visit_order[node.index()] {
                let mut group = Vec::new();
                while let Some(member) = stack.pop() {
                    on_stack[member.index()] = false;
                    group.push(member);
                    if member == node {
                        break;
                    }
                }
                // Self-dependencies are not edges, so a group of one is never a cycle.
                if group.len() > 1 {
                    group.sort_unstable();
                    groups.push(group);
                }
            }
        }
    }
    // Report in declaration order of each group's first task.
    groups.sort_unstable_by_key(|group| group[0]);

    let mut group_of = vec![UNSEEN; n];
    for (g, group) in groups.iter().enumerate() {
        for member in group {
            group_of[member.index()] = g as u32;
        }
    }
    let mut on_walk = vec![false; n];
    let mut on_cycle = vec![false; n];
    groups
        .iter()
        .enumerate()
        .map(|(g, group)| {
            let mut path = Vec::new();
            let mut node = group[0];
            while !on_walk[node.index()] {
                on_walk[node.index()] = true;
                path.push(node);
                // Every task of a group of several has a parent in the group; if that ever
                // failed, the walk would stop and report the path instead of looping.
                match parents
                    .of(node)
                    .iter()
                    .find(|p| group_of[p.index()] == g as u32)
                {
                    Some(&parent) => node = parent,
                    None => break,
                }
            }
            let from = path.iter().position(|&t| t == node).unwrap_or(0);
            let mut tasks = path.split_off(from);
            if let Some(first) = tasks
                .iter()
                .enumerate()
                .min_by_key(|(_, t)| **t)
                .map(|(i, _)| i)
            {
                tasks.rotate_left(first);
            }
            for t in &tasks {
                on_cycle[t.index()] = true;
            }
            let others = group
                .iter()
                .copied()
                .filter(|t| !on_cycle[t.index()])
                .collect();
            Cycle { tasks, others }
        })
        .collect()
}

/// Checks that every `fromTask` input names a direct or transitive dependency of its task.
///
/// `refs` come grouped by consumer. A source among the consumer's direct parents, the common
/// case, costs nothing beyond the consumer's own edges. The other sources ("far" sources) are
/// taken in batches of [`BATCH`], ordered by topological position, one bit each: one pass along
/// the topological order, from the batch's first source to its last consumer, carries each
/// task's bits to its children, so a consumer holds the bit of every source of the batch
/// upstream of it. Each pass is linear, and only tasks between the batch's sources and
/// consumers are visited, so k distinct far sources cost at most O((n + e) · ⌈k / 64⌉) for n
/// tasks and e edges, and much less when reads are local. (Arbitrary reachability queries have
/// no linear-time answer; this keeps the factor small and bounded.)
pub(crate) fn check_inputs_upstream(
    specs: &[&TaskSpec],
    paths: &[String],
    refs: &[TaskRef],
    children: &Adjacency,
    parents: &Adjacency,
    order: &[TaskId],
    problems: &mut Problems,
) {
    let n = specs.len();
    // Generation stamps avoid clearing `mark` between consumers.
    let mut mark = vec![0u32; n];
    let mut stamp = 0u32;
    let mut far: Vec<TaskRef> = Vec::new();
    for group in refs.chunk_by(|a, b| a.consumer == b.consumer) {
        stamp += 1;
        for &p in parents.of(group[0].consumer) {
            mark[p.index()] = stamp;
        }
        far.extend(group.iter().filter(|r| mark[r.source.index()] != stamp));
    }
    if far.is_empty() {
        return;
    }

    let mut position = vec![0u32; n];
    for (pos, id) in order.iter().enumerate() {
        position[id.index()] = pos as u32;
    }
    far.sort_unstable_by_key(|r| (position[r.source.index()], r.consumer));
    let by_source: Vec<&[TaskRef]> = far.chunk_by(|a, b| a.source == b.source).collect();
    let mut bits = vec![0u64; n];
    let mut not_upstream: Vec<TaskRef> = Vec::new();
    for batch in by_source.chunks(BATCH) {
        check_batch(
            batch,
            children,
            order,
            &position,
            &mut bits,
            &mut not_upstream,
        );
    }

    not_upstream.sort_unstable_by_key(|r| (r.consumer, r.place));
    for r in not_upstream {
        let task = specs[r.consumer.index()];
        let at = &paths[r.consumer.index()];
        let who = quoted(&task.name);
        let source = quoted(&specs[r.source.index()].name);
        let (field, what) = match r.place {
            RefPlace::Input(j) => (
                format!("{at}.inputs[{j}].fromTask"),
                format!("input {}", quoted(&task.inputs[j].name)),
            ),
            RefPlace::When(j) => (format!("{at}.when[{j}].task"), format!("when[{j}]")),
            RefPlace::ForEach => (format!("{at}.forEach.fromTask"), "forEach".to_string()),
        };
        problems.push(
            field,
            format!(
                "task {who}: {what} reads task {source}, which is not upstream \
                 (add it to dependsOn, directly or through another task)"
            ),
        );
    }
}

/// Far sources checked in one pass: one bit each in a `u64`.
const BATCH: usize = 64;

/// Checks the reads of up to [`BATCH`] sources, each a group of refs of one source, in order of
/// the sources' topological positions. `bits` is indexed by topological position and may hold
/// anything on entry; reads whose source is not upstream go to `not_upstream`.
fn check_batch(
    batch: &[&[TaskRef]],
    children: &Adjacency,
    order: &[TaskId],
    position: &[u32],
    bits: &mut [u64],
    not_upstream: &mut Vec<TaskRef>,
) {
    let pos = |id: TaskId| position[id.index()] as usize;
    let first = pos(batch[0][0].source);
    let last = batch
        .iter()
        .flat_map(|group| group.iter())
        .map(|r| pos(r.consumer))
        .max()
        .unwrap_or(first);
    if last <= first {
        // Every consumer comes before every source.
        not_upstream.extend(batch.iter().flat_map(|group| group.iter()));
        return;
    }
    let span = &mut bits[first..=last];
    span.fill(0);
    for (bit, group) in batch.iter().enumerate() {
        // A source past `last` has all its consumers before it: none is downstream.
        if let Some(slot) = span.get_mut(pos(group[0].source) - first) {
            *slot |= 1 << bit;
        }
    }
    for at in first..last {
        let here = bits[at];
        if here == 0 {
            continue;
        }
        for &child in children.of(order[at]) {
            let child = pos(child);
            // Children come later in the order; past `last` no consumer of this batch waits.
            if child <= last {
                bits[child] |= here;
            }
        }
    }
    for (bit, group) in batch.iter().enumerate() {
        let source = pos(group[0].source);
        // A consumer before its source cannot be downstream of it (and its bits are stale).
        not_upstream.extend(
            group
                .iter()
                .filter(|r| pos(r.consumer) <= source || bits[pos(r.consumer)] & (1 << bit) == 0),
        );
    }
}
