//! Ids and names as people type them: a unique prefix of a job, execution
//! or event id stands for the id ([`Hive::resolve_id`]), ids to print are
//! shortened to the fewest characters that stay unique
//! ([`Hive::short_ids`]), and a name that matches nothing is answered with
//! the closest ones ([`closest`]).
//!
//! Both id lookups are done here, in the hive, against every stored id of
//! the kind, so every client resolves and shortens alike and a short id
//! one client printed is one another accepts.

use ultron8_core::ids::{EventId, ExecutionId, JobId};
use ultron8_store::{ID_INDEXED_PREFIX, IdKind};

use crate::error::HiveError;
use crate::hive::Hive;

/// How many candidates a prefix lookup reads: enough to name a few of the
/// ids an ambiguous prefix starts.
const RESOLVE_LIMIT: u32 = 10;

/// How many ids sharing their first characters are read to shorten ids;
/// past it (a burst of thousands of jobs in a minute) ids print whole.
const SHORTEN_LIMIT: u32 = 2000;

/// How many ids of an ambiguous prefix the error names.
const NAMED_CANDIDATES: usize = 5;

impl Hive {
    /// The stored id of `kind` that `text` is, or is the start of. Refused
    /// when no id starts with it, or several do (naming some of them); an
    /// id equal to `text` wins over longer ones starting with it.
    pub async fn resolve_id(&self, kind: IdKind, text: &str) -> Result<String, HiveError> {
        let noun = kind.noun();
        if text.is_empty() {
            return Err(HiveError::invalid_argument(format!(
                "give a {noun} id, or its first characters"
            )));
        }
        if text.chars().any(char::is_control) {
            return Err(HiveError::invalid_argument(format!(
                "{text:?} is no {noun} id: ids hold no control characters"
            )));
        }
        let found = self
            .store
            .ids_with_prefix(kind, text, RESOLVE_LIMIT)
            .await?;
        match found.as_slice() {
            [] => Err(HiveError::not_found(format!(
                "no {noun} {text}; see `{}`",
                listing(kind)
            ))),
            [first, ..] if first == text => Ok(first.clone()),
            [only] => Ok(only.clone()),
            several => {
                let named: Vec<&str> = several
                    .iter()
                    .take(NAMED_CANDIDATES)
                    .map(String::as_str)
                    .collect();
                let more = if several.len() as u32 >= RESOLVE_LIMIT {
                    " and more".to_string()
                } else if several.len() > named.len() {
                    format!(" and {} more", several.len() - named.len())
                } else {
                    String::new()
                };
                Err(HiveError::invalid_argument(format!(
                    "{text} is the start of several {noun} ids: {}{more}; give more of the id",
                    named.join(", ")
                )))
            }
        }
    }

    pub async fn resolve_job_id(&self, text: &str) -> Result<JobId, HiveError> {
        self.resolve_id(IdKind::Job, text).await.map(JobId::from)
    }

    pub async fn resolve_execution_id(&self, text: &str) -> Result<ExecutionId, HiveError> {
        self.resolve_id(IdKind::Execution, text)
            .await
            .map(ExecutionId::from)
    }

    pub async fn resolve_event_id(&self, text: &str) -> Result<EventId, HiveError> {
        self.resolve_id(IdKind::Event, text)
            .await
            .map(EventId::from)
    }

    /// Each of `ids` cut to the shortest prefix, of at least
    /// [`ID_INDEXED_PREFIX`] characters, that no other stored id of `kind`
    /// starts with; in order. An id that cannot be shortened safely comes
    /// back whole.
    pub async fn short_ids(&self, kind: IdKind, ids: &[String]) -> Result<Vec<String>, HiveError> {
        let mut stored = self
            .store
            .ids_sharing_prefix(kind, ids, SHORTEN_LIMIT)
            .await?;
        if stored.len() as u32 >= SHORTEN_LIMIT {
            // Some neighbours may be missing: no prefix can be trusted.
            return Ok(ids.to_vec());
        }
        // In byte order, so each id's closest ids are its neighbours.
        stored.sort_unstable();
        Ok(ids
            .iter()
            .map(|id| shortest_unique_prefix(id, &stored).to_string())
            .collect())
    }
}

/// The command that lists ids of `kind`, for messages.
fn listing(kind: IdKind) -> &'static str {
    match kind {
        IdKind::Job => "ultronctl job list",
        IdKind::Execution => "ultronctl job get JOB",
        IdKind::Event => "ultronctl event list",
    }
}

/// How many leading characters two texts share.
fn common_prefix_chars(a: &str, b: &str) -> usize {
    a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count()
}

/// The shortest prefix of `id`, at least [`ID_INDEXED_PREFIX`] characters,
/// that no other id of `sorted` (in byte order; `id` itself may be in it)
/// starts with. A prefix does not end on a `-`, which reads as cut off; an
/// id that another one starts with is returned whole.
pub fn shortest_unique_prefix<'a>(id: &'a str, sorted: &[String]) -> &'a str {
    let position = sorted.partition_point(|other| other.as_str() < id);
    // In byte order the ids sharing the most with `id` are next to it.
    let before = position.checked_sub(1).and_then(|i| sorted.get(i));
    let after = sorted[position..].iter().find(|other| other.as_str() != id);
    let shared = [before, after]
        .into_iter()
        .flatten()
        .filter(|other| other.as_str() != id)
        .map(|other| common_prefix_chars(id, other))
        .max()
        .unwrap_or(0);
    let total = id.chars().count();
    let mut keep = (shared + 1).max(ID_INDEXED_PREFIX).min(total);
    if keep < total && id.chars().nth(keep - 1) == Some('-') {
        keep += 1;
    }
    match id.char_indices().nth(keep) {
        Some((end, _)) => &id[..end],
        None => id,
    }
}

/// Up to `count` of `candidates` closest to `word`, closest first: those
/// a typo away (an edit distance of about one in four characters, at least
/// one), so unrelated names are never offered.
pub fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
    count: usize,
) -> Vec<&'a str> {
    let word_len = word.chars().count();
    // Names are short; a long input is no typo of one.
    if word_len == 0 || word_len > 256 {
        return Vec::new();
    }
    let limit = (word_len / 4).max(1);
    let lowered = word.to_lowercase();
    let mut scored: Vec<(usize, &str)> = candidates
        .into_iter()
        .filter(|candidate| *candidate != word && candidate.chars().count() <= 256)
        .map(|candidate| {
            let distance = strsim::damerau_levenshtein(&lowered, &candidate.to_lowercase());
            (distance, candidate)
        })
        .filter(|(distance, _)| *distance <= limit)
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored
        .into_iter()
        .take(count)
        .map(|(_, candidate)| candidate)
        .collect()
}

/// `; did you mean a, b or c?`, or nothing when `names` is empty.
pub fn did_you_mean(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => format!("; did you mean {one}?"),
        [init @ .., last] => format!("; did you mean {} or {last}?", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(ids: &[&str]) -> Vec<String> {
        let mut ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
        ids.sort();
        ids
    }

    #[test]
    fn an_id_is_cut_where_it_parts_from_its_closest_neighbour_and_never_below_eight() {
        let ids = sorted(&[
            "0193a1c2-1234-7abc-8def-000000000001",
            "0193a1c2-1234-7abc-8def-000000000002",
            "0193a1c2-5678-7000-8000-000000000000",
            "0193b000-0000-7000-8000-000000000000",
        ]);
        // Alone in its first eight characters: eight.
        assert_eq!(
            shortest_unique_prefix("0193b000-0000-7000-8000-000000000000", &ids),
            "0193b000"
        );
        // Parts from its neighbour at the tenth character; a cut ending in
        // `-` takes one more.
        assert_eq!(
            shortest_unique_prefix("0193a1c2-5678-7000-8000-000000000000", &ids),
            "0193a1c2-5"
        );
        // Parts only at the last character: whole.
        assert_eq!(
            shortest_unique_prefix("0193a1c2-1234-7abc-8def-000000000001", &ids),
            "0193a1c2-1234-7abc-8def-000000000001"
        );
        // An id not stored is shortened against the stored ones.
        assert_eq!(
            shortest_unique_prefix("0193a1c2-9999-7000-8000-000000000000", &ids),
            "0193a1c2-9"
        );
        // With no neighbour at all, or shorter than eight: as it is.
        assert_eq!(shortest_unique_prefix("0193ffff-0000", &[]), "0193ffff");
        assert_eq!(shortest_unique_prefix("abc", &[]), "abc");
        // An id another one starts with cannot be shortened.
        let ids = sorted(&["job-00001", "job-000012"]);
        assert_eq!(shortest_unique_prefix("job-00001", &ids), "job-00001");
        assert_eq!(shortest_unique_prefix("job-000012", &ids), "job-000012");
    }

    #[test]
    fn every_shortened_id_names_only_itself() {
        let ids = sorted(&[
            "0193a1c2-aaaa",
            "0193a1c2-aaab",
            "0193a1c2-abcd",
            "0193a1c3-0000",
            "0193a1d0-0000",
            "0193a1d0-0001-x",
        ]);
        for id in &ids {
            let short = shortest_unique_prefix(id, &ids);
            let named: Vec<&String> = ids.iter().filter(|o| o.starts_with(short)).collect();
            assert_eq!(named, [id], "{short} for {id}");
        }
    }

    #[test]
    fn close_names_are_offered_and_distant_ones_never() {
        let drones = ["web-1", "web-2", "web-10", "db-1", "cache"];
        assert_eq!(closest("web1", drones, 3), ["web-1"]);
        assert_eq!(closest("wbe-2", drones, 3), ["web-2"]);
        assert_eq!(closest("WEB-3", drones, 3), ["web-1", "web-2"]);
        assert!(closest("mail", drones, 3).is_empty());
        assert!(closest("", drones, 3).is_empty());
        let actions = ["linux.restart_service", "linux.disk_usage", "core.http"];
        assert_eq!(
            closest("linux.restart_servce", actions, 3),
            ["linux.restart_service"]
        );
        assert_eq!(closest("core.htp", actions, 3), ["core.http"]);
        assert!(closest("linux.reboot", actions, 3).is_empty());
    }

    #[test]
    fn suggestions_read_as_a_sentence() {
        assert_eq!(did_you_mean(&[]), "");
        assert_eq!(did_you_mean(&["web-1"]), "; did you mean web-1?");
        assert_eq!(
            did_you_mean(&["web-1", "web-2", "web-3"]),
            "; did you mean web-1, web-2 or web-3?"
        );
    }
}
