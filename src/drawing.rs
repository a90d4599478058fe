//! Drawings of a workflow's DAG for people: Graphviz DOT and Mermaid text to paste into docs, and
//! an SVG laid out by layout-rs (layers top to bottom, edge crossings reduced). A fan-out task is
//! drawn once, marked `forEach`; finally tasks are marked and drawn after the rest.

use std::fmt::Write;

use crate::compile::{Dag, TaskId};

mod layers;

/// Largest DAG laid out by layout-rs: its crossing reduction takes seconds past a few hundred
/// tasks (25 s at 500 on our machine); larger ones get [`layers::layered`], linear time.
pub const LIBRARY_LAYOUT_LIMIT: usize = 300;

/// What a node says: the task's name, and what kind of task it is.
fn label(dag: &Dag, id: TaskId) -> String {
    let task = dag.task(id);
    let mut text = task.name.clone();
    if task.for_each.is_some() {
        text.push_str(" (forEach)");
    }
    if dag.is_finally(id) {
        text.push_str(" (finally)");
    }
    text
}

/// Graphviz DOT: `dot -Tsvg` draws it.
pub fn dot(dag: &Dag, name: &str) -> String {
    let mut out = format!(
        "digraph {} {{\n  rankdir=TB;\n  node [shape=box];\n",
        dot_id(name)
    );
    for (id, _) in dag.tasks() {
        let style = if dag.is_finally(id) {
            ", style=dashed"
        } else if dag.task(id).for_each.is_some() {
            ", peripheries=2"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  t{} [label={}{style}];",
            id.0,
            dot_id(&label(dag, id))
        );
    }
    for (id, _) in dag.tasks() {
        for child in dag.children(id) {
            let _ = writeln!(out, "  t{} -> t{};", id.0, child.0);
        }
    }
    out.push_str("}\n");
    out
}

/// A DOT quoted string.
fn dot_id(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A Mermaid flowchart, for Markdown that renders it (` ```mermaid `).
pub fn mermaid(dag: &Dag) -> String {
    let mut out = String::from("flowchart TD\n");
    for (id, _) in dag.tasks() {
        // Task names are DNS labels: nothing in them needs escaping.
        let shape = if dag.is_finally(id) {
            ("([", "])")
        } else {
            ("[", "]")
        };
        let _ = writeln!(
            out,
            "  t{}{}\"{}\"{}",
            id.0,
            shape.0,
            label(dag, id),
            shape.1
        );
    }
    for (id, _) in dag.tasks() {
        for child in dag.children(id) {
            let _ = writeln!(out, "  t{} --> t{}", id.0, child.0);
        }
    }
    out
}

/// An SVG drawing, laid out here. `Err` if the layout library gives up.
pub fn svg(dag: &Dag) -> Result<String, String> {
    use layout::backends::svg::SVGWriter;
    if dag.len() > LIBRARY_LAYOUT_LIMIT {
        return Ok(layers::svg(&layout(dag)?));
    }
    laid_out(dag, SVGWriter::new(), |writer| writer.finalize())
}

/// Where each task and dependency goes, for a page that draws them itself (the dashboard).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Layout {
    pub width: f64,
    pub height: f64,
    pub nodes: Vec<PlacedTask>,
    pub edges: Vec<PlacedEdge>,
}

/// A task's box: top-left corner and size.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacedTask {
    pub task: String,
    pub label: String,
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
    pub finally: bool,
    pub for_each: bool,
}

/// A dependency: an SVG path from `from`'s box to `to`'s.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PlacedEdge {
    pub from: String,
    pub to: String,
    pub d: String,
}

/// The positions layout-rs chose. `Err` if it gives up.
pub fn layout(dag: &Dag) -> Result<Layout, String> {
    if dag.len() > LIBRARY_LAYOUT_LIMIT {
        let labels: Vec<String> = dag.tasks().map(|(id, _)| label(dag, id)).collect();
        return Ok(layers::layered(dag, &labels));
    }
    let names: Vec<(String, bool, bool)> = dag
        .tasks()
        .map(|(id, task)| {
            (
                task.name.clone(),
                dag.is_finally(id),
                task.for_each.is_some(),
            )
        })
        .collect();
    let mut placed = laid_out(dag, Recorder::default(), |recorder| recorder)?;
    let mut out = Layout::default();
    for (index, (x, y, width, height)) in placed.boxes.drain() {
        let Some((name, finally, for_each)) = names.get(index) else {
            continue;
        };
        out.width = out.width.max(x + width);
        out.height = out.height.max(y + height);
        out.nodes.push(PlacedTask {
            task: name.clone(),
            label: name.clone(),
            x,
            y,
            width,
            height,
            finally: *finally,
            for_each: *for_each,
        });
    }
    out.nodes
        .sort_by_key(|n| names.iter().position(|(name, ..)| *name == n.task));
    for (from, to, d, extent) in placed.arrows {
        let (Some(from), Some(to)) = (names.get(from), names.get(to)) else {
            continue;
        };
        out.width = out.width.max(extent.0);
        out.height = out.height.max(extent.1);
        out.edges.push(PlacedEdge {
            from: from.0.clone(),
            to: to.0.clone(),
            d,
        });
    }
    Ok(out)
}

/// Lays `dag` out onto `backend` and hands it to `finish`. The library asserts on what it
/// cannot draw: its panic is an error here, not a crash.
fn laid_out<B, T>(dag: &Dag, backend: B, finish: impl FnOnce(B) -> T) -> Result<T, String>
where
    B: layout::core::format::RenderBackend,
{
    use layout::core::base::Orientation;
    use layout::core::geometry::Point;
    use layout::core::style::StyleAttr;
    use layout::std_shapes::shapes::{Arrow, Element, ShapeKind};
    use layout::topo::layout::VisualGraph;

    let labels: Vec<String> = dag.tasks().map(|(id, _)| label(dag, id)).collect();
    let edges: Vec<(usize, usize)> = dag
        .tasks()
        .flat_map(|(id, _)| {
            dag.children(id)
                .iter()
                .map(move |c| (id.index(), c.index()))
        })
        .collect();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let mut backend = backend;
        let mut graph = VisualGraph::new(Orientation::TopToBottom);
        let handles: Vec<_> = labels
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let width = layers::box_width(text);
                let element = Element::create_with_properties(
                    ShapeKind::new_box(text),
                    StyleAttr::simple(),
                    Orientation::LeftToRight,
                    Point::new(width, 36.0),
                    format!("data-task=\"{index}\""),
                );
                graph.add_node(element)
            })
            .collect();
        for (from, to) in edges {
            let arrow = Arrow::simple_with_properties("", format!("data-edge=\"{from},{to}\""));
            graph.add_edge(arrow, handles[from], handles[to]);
        }
        graph.do_it(false, false, false, &mut backend);
        finish(backend)
    }))
    .map_err(|_| "the graph could not be laid out".to_string())
}

/// Keeps the boxes and arrows layout-rs draws, by the task indexes given as their properties.
#[derive(Default)]
struct Recorder {
    boxes: std::collections::HashMap<usize, (f64, f64, f64, f64)>,
    /// From, to, SVG path, and the path's farthest corner.
    arrows: Vec<(usize, usize, String, (f64, f64))>,
}

/// The number in `data-task="N"`, or both in `data-edge="A,B"`.
fn indexes(properties: Option<&str>) -> Vec<usize> {
    properties
        .and_then(|p| p.split('"').nth(1))
        .map(|inner| inner.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_default()
}

impl layout::core::format::RenderBackend for Recorder {
    fn draw_rect(
        &mut self,
        xy: layout::core::geometry::Point,
        size: layout::core::geometry::Point,
        _look: &layout::core::style::StyleAttr,
        properties: Option<String>,
        _clip: Option<layout::core::format::ClipHandle>,
    ) {
        if let [index] = indexes(properties.as_deref())[..] {
            self.boxes.insert(index, (xy.x, xy.y, size.x, size.y));
        }
    }

    fn draw_line(
        &mut self,
        _start: layout::core::geometry::Point,
        _stop: layout::core::geometry::Point,
        _look: &layout::core::style::StyleAttr,
        _properties: Option<String>,
    ) {
    }

    fn draw_circle(
        &mut self,
        _xy: layout::core::geometry::Point,
        _size: layout::core::geometry::Point,
        _look: &layout::core::style::StyleAttr,
        _properties: Option<String>,
    ) {
    }

    fn draw_text(
        &mut self,
        _xy: layout::core::geometry::Point,
        _text: &str,
        _look: &layout::core::style::StyleAttr,
    ) {
    }

    fn draw_arrow(
        &mut self,
        path: &[(layout::core::geometry::Point, layout::core::geometry::Point)],
        _dashed: bool,
        _head: (bool, bool),
        _look: &layout::core::style::StyleAttr,
        properties: Option<String>,
        _text: &str,
    ) {
        let [from, to] = indexes(properties.as_deref())[..] else {
            return;
        };
        if path.len() < 2 {
            return;
        }
        // The curve layout-rs's own SVG writer draws: the first point's exit vector, then
        // each later point's entry vector.
        let mut d = format!(
            "M {} {} C {} {}, {} {}, {} {}",
            path[0].0.x,
            path[0].0.y,
            path[0].1.x,
            path[0].1.y,
            path[1].0.x,
            path[1].0.y,
            path[1].1.x,
            path[1].1.y
        );
        for point in &path[2..] {
            let _ = write!(
                d,
                " S {} {}, {} {}",
                point.0.x, point.0.y, point.1.x, point.1.y
            );
        }
        let far = path.iter().fold((0f64, 0f64), |acc, (a, b)| {
            (acc.0.max(a.x).max(b.x), acc.1.max(a.y).max(b.y))
        });
        self.arrows.push((from, to, d, far));
    }

    fn create_clip(
        &mut self,
        _xy: layout::core::geometry::Point,
        _size: layout::core::geometry::Point,
        _rounded_px: usize,
    ) -> layout::core::format::ClipHandle {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::WorkflowSpec;
    use crate::compile::compile;

    fn diamond() -> Dag {
        let spec: WorkflowSpec = serde_json::from_value(serde_json::json!({
            "defaults": {"image": "i"},
            "tasks": [
                {"name": "a", "command": ["true"]},
                {"name": "b", "dependsOn": ["a"], "command": ["true"], "forEach": {"items": [1]}},
                {"name": "c", "dependsOn": ["a"], "command": ["true"]},
                {"name": "d", "dependsOn": ["b", "c"], "command": ["true"]},
            ],
            "finally": [{"name": "report", "command": ["true"]}],
        }))
        .unwrap();
        compile(&spec, "spec").unwrap()
    }

    #[test]
    fn dot_and_mermaid_name_every_task_and_edge() {
        let dag = diamond();
        assert_eq!(
            dot(&dag, "diamond"),
            "digraph \"diamond\" {\n  rankdir=TB;\n  node [shape=box];\n  t0 [label=\"a\"];\n  \
             t1 [label=\"b (forEach)\", peripheries=2];\n  t2 [label=\"c\"];\n  t3 [label=\"d\"];\n  \
             t4 [label=\"report (finally)\", style=dashed];\n  t0 -> t1;\n  t0 -> t2;\n  \
             t1 -> t3;\n  t2 -> t3;\n}\n"
        );
        assert_eq!(
            mermaid(&dag),
            "flowchart TD\n  t0[\"a\"]\n  t1[\"b (forEach)\"]\n  t2[\"c\"]\n  t3[\"d\"]\n  \
             t4([\"report (finally)\"])\n  t0 --> t1\n  t0 --> t2\n  t1 --> t3\n  t2 --> t3\n"
        );
        assert_eq!(dot_id("say \"hi\"\\"), "\"say \\\"hi\\\"\\\\\"");
    }

    #[test]
    fn a_large_dag_is_laid_out_in_layers() {
        let mut tasks = Vec::new();
        for layer in 0..20 {
            for i in 0..50 {
                let mut task =
                    serde_json::json!({"name": format!("t{layer}-{i}"), "command": ["true"]});
                if layer > 0 {
                    let other = if i + 1 < 50 { i + 1 } else { i - 1 };
                    task["dependsOn"] = serde_json::json!([
                        format!("t{}-{i}", layer - 1),
                        format!("t{}-{other}", layer - 1)
                    ]);
                }
                tasks.push(task);
            }
        }
        let spec: WorkflowSpec = serde_json::from_value(serde_json::json!({
            "defaults": {"image": "i"}, "tasks": tasks,
            "finally": [{"name": "report", "command": ["true"]}],
        }))
        .unwrap();
        let dag = compile(&spec, "spec").unwrap();
        let placed = layout(&dag).unwrap();
        assert_eq!(placed.nodes.len(), 1001);
        assert_eq!(placed.edges.len(), 19 * 100);
        let y = |name: &str| placed.nodes.iter().find(|n| n.task == name).unwrap().y;
        assert!(y("t0-0") < y("t1-0") && y("t1-0") < y("t19-49"));
        assert!(y("t19-49") < y("report"), "finally tasks come last");
        // No two boxes of a layer overlap.
        let mut row: Vec<_> = placed.nodes.iter().filter(|n| n.y == y("t5-0")).collect();
        row.sort_by(|a, b| a.x.total_cmp(&b.x));
        assert_eq!(row.len(), 50);
        assert!(row.windows(2).all(|w| w[0].x + w[0].width <= w[1].x));
        let drawn = svg(&dag).unwrap();
        assert!(drawn.starts_with("<svg") && drawn.contains(">report (finally)<"));
    }

    #[test]
    fn the_svg_draws_every_task() {
        let svg = svg(&diamond()).unwrap();
        assert!(svg.starts_with("<svg") || svg.contains("<svg"), "{svg}");
        let placed = layout(&diamond()).unwrap();
        let names: Vec<&str> = placed.nodes.iter().map(|n| n.task.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "d", "report"]);
        assert_eq!(placed.edges.len(), 4);
        let a = &placed.nodes[0];
        let d = &placed.nodes[3];
        assert!(a.y < d.y, "a is drawn above d: {placed:?}");
        assert!(placed.nodes[1].for_each && placed.nodes[4].finally);
        assert!(placed.edges.iter().all(|e| e.d.starts_with("M ")));
        assert!(placed.width >= d.x + d.width && placed.height >= d.y + d.height);
        for name in ["a", "b (forEach)", "c", "d", "report (finally)"] {
            assert!(svg.contains(&format!(">{name}<")), "{name} in {svg}");
        }
    }
}
