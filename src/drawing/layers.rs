//! A layered layout for large DAGs, where layout-rs takes too long (its crossing reduction grew
//! to 25 s at 500 tasks and 91 s at 1,000 on our machine). Each task goes in the layer of its
//! longest path from a root; finally tasks in a layer of their own after the rest; within a
//! layer, tasks are ordered by the mean position of their parents (two sweeps, down then up),
//! which keeps most edges short. Linear in the tasks and edges, apart from sorting each layer.

use super::{Layout, PlacedEdge, PlacedTask};
use crate::compile::Dag;

const HEIGHT: f64 = 36.0;
const GAP_X: f64 = 20.0;
const GAP_Y: f64 = 60.0;
const MARGIN: f64 = 10.0;

/// A box wide enough for `label`.
pub fn box_width(label: &str) -> f64 {
    (label.chars().count() as f64 * 9.0 + 24.0).max(60.0)
}

/// Lays `dag` out in layers, top to bottom; `labels[i]` is task `i`'s label.
pub fn layered(dag: &Dag, labels: &[String]) -> Layout {
    let count = dag.len();
    let ids: Vec<_> = dag.tasks().map(|(id, _)| id).collect();
    // Longest path from a root, by Kahn's order (the DAG has no cycles: it compiled).
    let mut waiting: Vec<usize> = ids.iter().map(|&id| dag.parents(id).len()).collect();
    let mut ready: Vec<usize> = (0..count).filter(|&i| waiting[i] == 0).collect();
    let mut rank = vec![0usize; count];
    while let Some(i) = ready.pop() {
        for child in dag.children(ids[i]) {
            let c = child.index();
            rank[c] = rank[c].max(rank[i] + 1);
            waiting[c] -= 1;
            if waiting[c] == 0 {
                ready.push(c);
            }
        }
    }
    let deepest = (0..count)
        .filter(|&i| !dag.is_finally(ids[i]))
        .map(|i| rank[i])
        .max()
        .unwrap_or(0);
    for i in 0..count {
        if dag.is_finally(ids[i]) {
            rank[i] = deepest + 1;
        }
    }
    let layers_count = rank.iter().copied().max().map_or(0, |r| r + 1);
    let mut layers: Vec<Vec<usize>> = vec![Vec::new(); layers_count];
    for i in 0..count {
        layers[rank[i]].push(i);
    }
    // Order within each layer by the mean place of the neighbours in the layer above, then
    // below.
    let mut place = vec![0f64; count];
    let number = |layer: &[usize], place: &mut [f64]| {
        for (at, &i) in layer.iter().enumerate() {
            place[i] = at as f64;
        }
    };
    for layer in &layers {
        number(layer, &mut place);
    }
    let mean = |neighbours: &mut dyn Iterator<Item = usize>, place: &[f64], own: f64| {
        let (sum, n) = neighbours.fold((0.0, 0usize), |(s, n), j| (s + place[j], n + 1));
        if n == 0 { own } else { sum / n as f64 }
    };
    for down in [true, false] {
        let order: Vec<usize> = if down {
            (1..layers_count).collect()
        } else {
            (0..layers_count.saturating_sub(1)).rev().collect()
        };
        for l in order {
            let mut keyed: Vec<(f64, usize)> = layers[l]
                .iter()
                .map(|&i| {
                    let id = ids[i];
                    let key = if down {
                        mean(
                            &mut dag.parents(id).iter().map(|p| p.index()),
                            &place,
                            place[i],
                        )
                    } else {
                        mean(
                            &mut dag.children(id).iter().map(|c| c.index()),
                            &place,
                            place[i],
                        )
                    };
                    (key, i)
                })
                .collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            layers[l] = keyed.into_iter().map(|(_, i)| i).collect();
            number(&layers[l], &mut place);
        }
    }
    // Boxes: each layer centred on the widest.
    let widths: Vec<f64> = layers
        .iter()
        .map(|layer| {
            layer.iter().map(|&i| box_width(&labels[i])).sum::<f64>()
                + GAP_X * layer.len().saturating_sub(1) as f64
        })
        .collect();
    let widest = widths.iter().copied().fold(0.0, f64::max);
    let mut boxes = vec![(0.0, 0.0, 0.0); count];
    for (l, layer) in layers.iter().enumerate() {
        let mut x = MARGIN + (widest - widths[l]) / 2.0;
        let y = MARGIN + l as f64 * (HEIGHT + GAP_Y);
        for &i in layer {
            let width = box_width(&labels[i]);
            boxes[i] = (x, y, width);
            x += width + GAP_X;
        }
    }
    let nodes = (0..count)
        .map(|i| {
            let task = dag.task(ids[i]);
            PlacedTask {
                task: task.name.clone(),
                label: task.name.clone(),
                x: boxes[i].0,
                y: boxes[i].1,
                width: boxes[i].2,
                height: HEIGHT,
                finally: dag.is_finally(ids[i]),
                for_each: task.for_each.is_some(),
            }
        })
        .collect();
    let mut edges = Vec::new();
    for i in 0..count {
        for child in dag.children(ids[i]) {
            let c = child.index();
            let (x1, y1) = (boxes[i].0 + boxes[i].2 / 2.0, boxes[i].1 + HEIGHT);
            let (x2, y2) = (boxes[c].0 + boxes[c].2 / 2.0, boxes[c].1);
            let middle = (y1 + y2) / 2.0;
            edges.push(PlacedEdge {
                from: dag.task(ids[i]).name.clone(),
                to: dag.task(*child).name.clone(),
                d: format!("M {x1} {y1} C {x1} {middle}, {x2} {middle}, {x2} {y2}"),
            });
        }
    }
    Layout {
        width: widest + 2.0 * MARGIN,
        height: MARGIN * 2.0 + layers_count as f64 * (HEIGHT + GAP_Y) - GAP_Y,
        nodes,
        edges,
    }
}

/// An SVG drawing of `layout` (for `ork graph -f svg` of a large DAG).
pub fn svg(layout: &Layout) -> String {
    use std::fmt::Write;
    let escape = |text: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"14\">\n\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" \
         markerWidth=\"6\" markerHeight=\"6\" orient=\"auto\"><path d=\"M 0 0 L 10 5 L 0 10 z\"/>\
         </marker></defs>\n",
        w = layout.width,
        h = layout.height
    );
    for edge in &layout.edges {
        let _ = writeln!(
            out,
            "<path d=\"{}\" fill=\"none\" stroke=\"black\" marker-end=\"url(#arrow)\"/>",
            edge.d
        );
    }
    for node in &layout.nodes {
        let mut label = node.label.clone();
        if node.for_each {
            label.push_str(" (forEach)");
        }
        if node.finally {
            label.push_str(" (finally)");
        }
        let dash = if node.finally {
            " stroke-dasharray=\"5,5\""
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"4\" fill=\"white\" \
             stroke=\"black\"{dash}/>\n<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" \
             dominant-baseline=\"middle\">{}</text>",
            node.x,
            node.y,
            node.width,
            node.height,
            node.x + node.width / 2.0,
            node.y + node.height / 2.0,
            escape(&label)
        );
    }
    out.push_str("</svg>\n");
    out
}
