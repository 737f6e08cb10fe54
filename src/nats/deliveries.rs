//! Deliveries that never arrived. A consumer numbers what it delivers: each delivery
//! gets the next consumer sequence, and a consumer of every subject of a stream delivers
//! messages whose stream sequences follow one another. Where such numbers jump, messages
//! were delivered and lost on the way (a connection dropped with them in flight). The
//! consumer would send them again once their ack wait expires, but acknowledging a later
//! message first (`AckPolicy::All`) acknowledges them unseen: so the partition writers
//! (by consumer sequence) and the history writer (by stream sequence) read them from the
//! stream before they acknowledge anything later.

/// How many deliveries are missing before or among `len` messages numbered `first` to
/// `last`, the next expected being `next` (`None`: not known, nothing before counts).
/// A number lower than expected (a consumer recreated) is no loss.
pub fn skipped(next: Option<u64>, (first, last): (u64, u64), len: usize) -> u64 {
    let before = next.map_or(0, |next| first.saturating_sub(next));
    let among = (last.saturating_sub(first) + 1).saturating_sub(len as u64);
    before + among
}

#[cfg(test)]
mod tests {
    use super::skipped;

    #[test]
    fn contiguous_deliveries_skip_nothing() {
        assert_eq!(skipped(Some(11), (11, 20), 10), 0);
        assert_eq!(skipped(None, (11, 20), 10), 0);
    }

    #[test]
    fn a_jump_before_or_inside_a_pull_counts_the_missing_deliveries() {
        assert_eq!(skipped(Some(8), (11, 20), 10), 3);
        assert_eq!(skipped(Some(11), (11, 22), 10), 2);
        assert_eq!(skipped(Some(9), (11, 22), 10), 4);
    }

    #[test]
    fn a_restart_of_the_numbering_is_no_loss() {
        assert_eq!(skipped(Some(500), (1, 10), 10), 0);
        assert_eq!(skipped(None, (1, 1), 1), 0);
    }
}
