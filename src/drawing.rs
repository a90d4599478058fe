//! Drawings of a workflow's DAG for people: Graphviz DOT and Mermaid text to paste into docs, and
//! an SVG laid out by layout-rs (layers top to bottom, edge crossings reduced). A fan-out task is
//! drawn once, marked `forEach`; finally tasks are marked and drawn after the rest.

use std::fmt::Write;

use crate::compile::{Dag, TaskId};

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
    // The library asserts on what it cannot draw: its panic is an error here, not a crash.
    std::panic::catch_unwind(move || {
        let mut graph = VisualGraph::new(Orientation::TopToBottom);
        let handles: Vec<_> = labels
            .iter()
            .map(|text| {
                let width = (text.chars().count() as f64 * 9.0 + 24.0).max(60.0);
                let element = Element::create(
                    ShapeKind::new_box(text),
                    StyleAttr::simple(),
                    Orientation::LeftToRight,
                    Point::new(width, 36.0),
                );
                graph.add_node(element)
            })
            .collect();
        for (from, to) in edges {
            graph.add_edge(Arrow::simple(""), handles[from], handles[to]);
        }
        let mut writer = SVGWriter::new();
        graph.do_it(false, false, false, &mut writer);
        writer.finalize()
    })
    .map_err(|_| "the graph could not be laid out".to_string())
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
    fn the_svg_draws_every_task() {
        let svg = svg(&diamond()).unwrap();
        assert!(svg.starts_with("<svg") || svg.contains("<svg"), "{svg}");
        for name in ["a", "b (forEach)", "c", "d", "report (finally)"] {
            assert!(svg.contains(&format!(">{name}<")), "{name} in {svg}");
        }
    }
}
