//! Validation problems: every issue found in a manifest, each naming the field it is about.

use std::fmt;

/// One thing wrong with a manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Path of the offending field, e.g. `spec.tasks[2].dependsOn[0]`.
    pub field: String,
    /// What is wrong, naming the task or parameter involved.
    pub message: String,
}

impl Problem {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// Every problem found in one object, reported together: at most [`Problems::MAX_KEPT`] of
/// them, then one last problem counting the rest. A hostile manifest can hold millions of
/// problems; the first thousand say what is wrong, and memory and output stay bounded.
///
/// The list is `pub` for reading; add problems with [`Problems::push`], which keeps the bound.
/// The second field counts the problems found but not kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>, usize);

impl Problems {
    /// Problems kept in full; any further ones are only counted.
    pub const MAX_KEPT: usize = 1_000;

    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        if self.0.len() < Self::MAX_KEPT {
            self.0.push(Problem::new(field, message));
            return;
        }
        self.1 += 1;
        let summary = Problem::new("", format!("… and {} more problems", self.1));
        match self.0.get_mut(Self::MAX_KEPT) {
            Some(last) => *last = summary,
            None => self.0.push(summary),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Problems kept, counting the final "… and N more problems" line when there is one.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Problems found but not kept.
    pub fn omitted(&self) -> usize {
        self.1
    }

    pub fn iter(&self) -> impl Iterator<Item = &Problem> {
        self.0.iter()
    }

    /// `Ok(value)` when nothing was found, otherwise every problem.
    pub fn into_result<T>(self, value: T) -> Result<T, Problems> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for Problems {
    /// One problem per line, so the list reads well in a terminal and in a condition message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_past_the_bound_are_counted_not_kept() {
        let mut problems = Problems::default();
        for i in 0..Problems::MAX_KEPT {
            problems.push(format!("spec.tasks[{i}]"), "bad");
        }
        assert_eq!(problems.len(), Problems::MAX_KEPT);
        assert_eq!(problems.omitted(), 0);
        for i in 0..250_000 {
            problems.push(format!("spec.tasks[{i}]"), "x".repeat(100));
        }
        assert_eq!(problems.len(), Problems::MAX_KEPT + 1);
        assert_eq!(problems.omitted(), 250_000);
        let last = problems.iter().last().unwrap();
        assert_eq!(last.to_string(), "… and 250000 more problems");
        assert_eq!(problems.0[Problems::MAX_KEPT - 1].field, "spec.tasks[999]");
        assert!(problems.to_string().len() < 40_000);
    }
}
