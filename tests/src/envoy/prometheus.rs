//! A parsed `/stats/prometheus` scrape: samples with their label sets.

use std::collections::BTreeMap;
use std::fmt;

/// One sample line: `name{label="value",...} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.series())?;
        write!(f, " {}", self.value)
    }
}

impl Sample {
    /// `name{a="1",b="2"}` (labels sorted by name), or just `name` without labels.
    pub fn series(&self) -> String {
        if self.labels.is_empty() {
            return self.name.clone();
        }
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        format!("{}{{{}}}", self.name, labels.join(","))
    }
}

/// Every sample of one scrape, plus the raw text (for failure messages).
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    pub samples: Vec<Sample>,
    pub text: String,
}

impl Scrape {
    /// Parses the text exposition format (comments and malformed lines are skipped).
    pub fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .filter_map(parse_line)
            .collect();
        Scrape {
            samples,
            text: text.to_owned(),
        }
    }

    /// The value of the series with exactly these labels.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == wanted)
            .map(|s| s.value)
    }

    /// The samples whose metric name starts with `prefix`.
    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples
            .iter()
            .filter(move |s| s.name.starts_with(prefix))
    }

    /// The series (`name{labels}`) whose metric name starts with `prefix`, sorted.
    pub fn series(&self, prefix: &str) -> Vec<String> {
        let mut series: Vec<String> = self.with_prefix(prefix).map(Sample::series).collect();
        series.sort();
        series
    }

    /// The lines of the raw text that mention `needle`, for failure messages.
    pub fn lines_with(&self, needle: &str) -> String {
        self.text
            .lines()
            .filter(|l| l.contains(needle))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let (series, value) = line.trim().rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        None => (series.to_owned(), BTreeMap::new()),
        Some((name, rest)) => (name.to_owned(), parse_labels(rest.strip_suffix('}')?)?),
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// `a="1",b="x\"y"` → {a: 1, b: x"y}.
fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => return None,
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end?;
        labels.insert(name.trim_start_matches(',').to_owned(), value);
        rest = after.get(end + 1..)?.trim_start_matches(',');
    }
    Some(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_samples_and_labels() {
        let scrape = Scrape::parse(
            "# TYPE envoy_x counter\nenvoy_x{a=\"1\",b=\"q\\\"z\"} 3\nenvoy_y 4.5\n\n",
        );
        assert_eq!(
            scrape.value("envoy_x", &[("a", "1"), ("b", "q\"z")]),
            Some(3.0)
        );
        assert_eq!(scrape.value("envoy_y", &[]), Some(4.5));
        assert_eq!(scrape.value("envoy_x", &[("a", "1")]), None);
        assert_eq!(
            scrape.series("envoy_"),
            ["envoy_x{a=\"1\",b=\"q\"z\"}", "envoy_y"]
        );
    }
}
