//! "Partition n of P": the one place that names a partition's subjects, consumer and
//! snapshot marker, and maps a match to its partition.
//!
//! The events stream stores `<prefix>.<match_id>` as `<prefix>.<P>.<n>.<match_id>` (a
//! subject transform computed by NATS); P is part of every name, so the names of another
//! partition count never collide with these.

use crate::config::StreamNames;

/// How the events stream is partitioned: P partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partitioning {
    /// P.
    pub count: u16,
}

/// Partition `n` of `of`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Partition {
    /// Its number, `0..of`.
    pub n: u16,
    /// The partition count P.
    pub of: u16,
}

/// The partition NATS maps a match to, as its `partition(P,1)` subject transform does:
/// FNV-1a (32 bits) of the match id, modulo `partitions`.
pub fn partition_of(match_id: &str, partitions: u16) -> u16 {
    let hash = match_id.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    (hash % u32::from(partitions)) as u16
}

/// Prefix of partition markers in the snapshot bucket.
pub const MARKER_PREFIX: &str = "partition.";

impl Partitioning {
    /// The partitioning the settings name.
    pub fn of(names: &StreamNames) -> Self {
        Partitioning {
            count: names.partitions,
        }
    }

    /// Every partition, in order.
    pub fn all(self) -> impl Iterator<Item = Partition> {
        (0..self.count).map(move |n| Partition { n, of: self.count })
    }

    /// The partition of a match.
    pub fn of_match(self, match_id: &str) -> Partition {
        Partition {
            n: partition_of(match_id, self.count),
            of: self.count,
        }
    }

    /// The stream's subject transform destination, mapping `<prefix>.<match_id>` to its
    /// partition's subject.
    pub fn transform(self, names: &StreamNames) -> String {
        let p = self.count;
        format!(
            "{}.{p}.{{{{partition({p},1)}}}}.{{{{wildcard(1)}}}}",
            names.events_subject
        )
    }

    /// The subject prefix of every marker of this partition count: `partition.<P>.`.
    pub fn marker_prefix(self) -> String {
        format!("{MARKER_PREFIX}{}.", self.count)
    }
}

impl Partition {
    /// Where the stream stores this partition's events: `<prefix>.<P>.<n>.*`.
    pub fn filter(self, names: &StreamNames) -> String {
        self.subject_of(names, "*")
    }

    /// Where the stream stores the events of one of its matches (or, given `*`, of all):
    /// `<prefix>.<P>.<n>.<match_id>`.
    pub fn subject_of(self, names: &StreamNames, match_id: impl std::fmt::Display) -> String {
        format!("{}.{}.{}.{match_id}", names.events_subject, self.of, self.n)
    }

    /// Its durable consumer: `<name>-<n>-of-<P>`.
    pub fn consumer_name(self, names: &StreamNames) -> String {
        format!("{}-{}-of-{}", names.consumer_name, self.n, self.of)
    }

    /// Its marker key in the snapshot bucket: `partition.<P>.<n>`.
    pub fn marker_key(self) -> String {
        format!("{MARKER_PREFIX}{}.{}", self.of, self.n)
    }

    /// Whether a match belongs to it.
    pub fn holds(self, match_id: &str) -> bool {
        partition_of(match_id, self.of) == self.n
    }

    /// Its index in per-partition tables.
    pub fn index(self) -> usize {
        usize::from(self.n)
    }
}

impl std::fmt::Display for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.n, self.of)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_partition_and_the_count() {
        let names = StreamNames::defaults();
        let p = Partition { n: 3, of: 16 };
        assert_eq!(p.filter(&names), "match_stats.events.16.3.*");
        assert_eq!(p.consumer_name(&names), "match-stats-3-of-16");
        assert_eq!(p.marker_key(), "partition.16.3");
        assert_eq!(
            Partitioning { count: 16 }.transform(&names),
            "match_stats.events.16.{{partition(16,1)}}.{{wildcard(1)}}"
        );
    }

    #[test]
    fn a_match_belongs_to_exactly_one_partition() {
        let partitioning = Partitioning { count: 16 };
        for id in ["a", "match-1", "9b2f3c1e-0d6a-4c3e-9f57-1a2b3c4d5e6f"] {
            let owners: Vec<_> = partitioning.all().filter(|p| p.holds(id)).collect();
            assert_eq!(owners, vec![partitioning.of_match(id)], "{id}");
        }
    }
}
