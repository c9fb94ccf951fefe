//! CSV and TSV event lines, with or without a header.

use super::json::Line;
use super::Event;
use recs_core::time::parse_time;

/// Column positions of a CSV/TSV file.
#[derive(Debug, Clone, Copy)]
pub(super) struct Columns {
    user: usize,
    item: usize,
    rating: Option<usize>,
    ts: Option<usize>,
    pub(super) width: usize,
}

/// Without a header: `user,item,rating,timestamp`.
pub(super) const POSITIONAL: Columns = Columns {
    user: 0,
    item: 1,
    rating: Some(2),
    ts: Some(3),
    width: 4,
};

pub(super) fn header_columns(fields: &[&str]) -> Option<Columns> {
    let find = |names: &[&str]| {
        fields.iter().position(|f| {
            let f = f.trim().trim_matches('"').to_ascii_lowercase();
            names.contains(&f.as_str())
        })
    };
    let user = find(&["user_id", "user", "userid"])?;
    let item = find(&["movie_id", "movie", "movieid", "item", "item_id", "itemid"])?;
    Some(Columns {
        user,
        item,
        rating: find(&["rating"]),
        ts: find(&["ts", "timestamp", "time"]),
        width: fields.len(),
    })
}

pub(super) fn parse_csv_fields(fields: &[&str], c: &Columns) -> Line {
    let get = |i: usize| fields.get(i).map(|f| f.trim().trim_matches('"'));
    let id = |i| {
        get(i)
            .and_then(|f| f.parse::<i64>().ok())
            .filter(|&v| v >= 0)
    };
    let (Some(user), Some(item)) = (id(c.user), id(c.item)) else {
        return Line::Malformed("user and movie must be non-negative integers");
    };
    let rating = match c.rating.and_then(get) {
        None | Some("") => None,
        Some(r) => match r.parse::<f32>() {
            Ok(v) if v.is_finite() => Some(v),
            _ => return Line::Malformed("rating is not a finite number"),
        },
    };
    match c.ts.and_then(get).and_then(parse_time) {
        Some(ts) => Line::Event(Event {
            user,
            item,
            rating,
            ts_ms: Some(ts),
        }),
        None => Line::Malformed("no valid timestamp column"),
    }
}
