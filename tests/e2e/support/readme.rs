//! A README section's shell walkthrough as data, so a test can run it as a reader
//! would paste it.
//!
//! [`section`] cuts one `## heading` out of the Markdown; [`walkthrough`] reads its
//! fenced blocks:
//!
//! - ```` ```sh ```` blocks hold commands. One command may span lines, by a `\` at
//!   the end of a line or by a quote left open (a multi-line `-d '{…}'`); `#`
//!   comments are dropped. Kept are the `grpcurl` commands, in order, and the
//!   `export NAME=$(… logi -- token --role R --sub S --ttl T)` lines that mint the
//!   tokens they use.
//! - A ```` ```json ```` or ```` ```text ```` block is the output the README
//!   shows for the last `grpcurl` command before it.

use serde_json::Value;

/// What a test needs to replay a walkthrough.
#[derive(Debug, Default, PartialEq)]
pub struct Walkthrough {
    pub tokens: Vec<TokenExport>,
    pub steps: Vec<Step>,
}

/// `export {var}=$(… logi -- token --role {role} --sub {sub} --ttl {ttl})`.
#[derive(Debug, PartialEq)]
pub struct TokenExport {
    pub var: String,
    pub role: String,
    pub sub: String,
    pub ttl: String,
}

/// One `grpcurl` command, continuations joined, and the output shown after it.
#[derive(Debug, PartialEq)]
pub struct Step {
    pub command: String,
    pub output: Option<Output>,
}

#[derive(Debug, PartialEq)]
pub enum Output {
    Json(Value),
    /// Trimmed.
    Text(String),
}

/// The body of the `## {heading}` section: up to the next heading of that level or
/// higher outside a fenced block (a shell comment in one is not a heading). None
/// if there is no such heading.
pub fn section<'a>(markdown: &'a str, heading: &str) -> Option<&'a str> {
    let title = format!("## {heading}\n");
    let start = markdown.find(&title)? + title.len();
    let rest = &markdown[start..];
    let mut fenced = false;
    let mut at = 0;
    for line in rest.split_inclusive('\n') {
        if line.starts_with("```") {
            fenced = !fenced;
        } else if !fenced && (line.starts_with("## ") || line.starts_with("# ")) {
            break;
        }
        at += line.len();
    }
    Some(&rest[..at])
}

/// The section's tokens and grpcurl commands with their shown outputs.
///
/// # Errors
/// A message naming the block, for an output block with no command before it,
/// a second output for one command, JSON that does not parse, an `export` of a
/// token without `--role` or `--sub`, or a fence left open.
pub fn walkthrough(section: &str) -> Result<Walkthrough, String> {
    let mut found = Walkthrough::default();
    for (lang, body) in fenced_blocks(section)? {
        match lang {
            "sh" => {
                for line in logical_lines(body) {
                    match line.split_whitespace().next() {
                        Some("grpcurl") => found.steps.push(Step {
                            command: line,
                            output: None,
                        }),
                        Some("export") => found.tokens.extend(token_export(&line)?),
                        _ => {}
                    }
                }
            }
            "json" | "text" => {
                let step = found
                    .steps
                    .last_mut()
                    .ok_or_else(|| format!("a ```{lang} block before any grpcurl command"))?;
                if step.output.is_some() {
                    return Err(format!("a second output block for `{}`", step.command));
                }
                step.output = Some(if lang == "json" {
                    Output::Json(
                        serde_json::from_str(body)
                            .map_err(|e| format!("the output shown for `{}`: {e}", step.command))?,
                    )
                } else {
                    Output::Text(body.trim().to_owned())
                });
            }
            _ => {}
        }
    }
    Ok(found)
}

/// Each fenced block's info string and body.
fn fenced_blocks(markdown: &str) -> Result<Vec<(&str, &str)>, String> {
    let mut blocks = Vec::new();
    let mut open: Option<(&str, usize)> = None;
    let mut at = 0;
    for line in markdown.split_inclusive('\n') {
        if let Some(fence) = line.trim_end().strip_prefix("```") {
            match open.take() {
                None => open = Some((fence.trim(), at + line.len())),
                Some((lang, start)) => blocks.push((lang, &markdown[start..at])),
            }
        }
        at += line.len();
    }
    match open {
        Some((lang, _)) => Err(format!("a ```{lang} block is not closed")),
        None => Ok(blocks),
    }
}

/// The commands of a shell script as the shell reads them: a newline ends one
/// unless it is escaped by `\` or inside quotes; comments are dropped; what is
/// left is trimmed, and empty lines are skipped.
fn logical_lines(script: &str) -> Vec<String> {
    #[derive(PartialEq)]
    enum Quote {
        None,
        Single,
        Double,
    }
    let mut lines = Vec::new();
    let mut line = String::new();
    let mut quote = Quote::None;
    let mut chars = script.chars().peekable();
    while let Some(c) = chars.next() {
        match (&quote, c) {
            (Quote::None, '\\') if chars.peek() == Some(&'\n') => {
                chars.next();
            }
            (Quote::None | Quote::Double, '\\') => {
                line.push(c);
                line.extend(chars.next());
            }
            (Quote::None, '#') if line.is_empty() || line.ends_with(char::is_whitespace) => {
                while chars.next_if(|&c| c != '\n').is_some() {}
            }
            (Quote::None, '\n') => lines.push(std::mem::take(&mut line)),
            (Quote::None, '\'') => {
                quote = Quote::Single;
                line.push(c);
            }
            (Quote::None, '"') => {
                quote = Quote::Double;
                line.push(c);
            }
            (Quote::Single, '\'') | (Quote::Double, '"') => {
                quote = Quote::None;
                line.push(c);
            }
            _ => line.push(c),
        }
    }
    lines.push(line);
    lines
        .into_iter()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// `export NAME=$(… logi -- token …)`; None for any other `export`.
fn token_export(line: &str) -> Result<Option<TokenExport>, String> {
    let Some((var, value)) = line.trim_start_matches("export").trim().split_once('=') else {
        return Ok(None);
    };
    let Some(inner) = value.strip_prefix("$(").and_then(|v| v.strip_suffix(')')) else {
        return Ok(None);
    };
    let words: Vec<&str> = inner.split_whitespace().collect();
    let Some(token) = words.windows(2).position(|w| w == ["--", "token"]) else {
        return Ok(None);
    };
    let flag = |name: &str| {
        words[token..]
            .windows(2)
            .find(|w| w[0] == name)
            .map(|w| w[1].to_owned())
    };
    let missing = |name: &str| format!("`{line}` has no {name}");
    Ok(Some(TokenExport {
        var: var.to_owned(),
        role: flag("--role").ok_or_else(|| missing("--role"))?,
        sub: flag("--sub").ok_or_else(|| missing("--sub"))?,
        ttl: flag("--ttl").unwrap_or_else(|| "1h".to_owned()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_backslash_or_an_open_quote_continues_a_command() {
        let script = "grpcurl -plaintext \\\n  -d '{\"a\": 1,\n       \"b\": 2}' \\\n  host list\n";
        assert_eq!(
            logical_lines(script),
            ["grpcurl -plaintext   -d '{\"a\": 1,\n       \"b\": 2}'   host list"]
        );
    }

    #[test]
    fn comments_end_at_the_line_but_not_inside_quotes_or_words() {
        let script =
            "# a step\ngrpcurl -d '{\"x\": \"#1\"}' a#b # why\n  # more\necho \"it's\" \\# not\n";
        assert_eq!(
            logical_lines(script),
            ["grpcurl -d '{\"x\": \"#1\"}' a#b", "echo \"it's\" \\# not"]
        );
    }

    #[test]
    fn only_grpcurl_commands_are_steps_and_only_logi_token_exports_are_tokens() {
        let md = "\
Paste these:

```sh
export RIDER_TOKEN=$(cargo run -q --release --bin logi -- token --role user --sub 12 --ttl 1h)
export PATH=$PATH:/opt/bin
cargo run --bin logi -- up
```

```sh
grpcurl -plaintext localhost:50051 list   # every service
websocat ws://localhost:8080/ws
grpcurl -plaintext \\
  localhost:50051 grpc.health.v1.Health/Check
```
";
        let found = walkthrough(md).unwrap();
        assert_eq!(
            found.tokens,
            [TokenExport {
                var: "RIDER_TOKEN".into(),
                role: "user".into(),
                sub: "12".into(),
                ttl: "1h".into(),
            }]
        );
        let commands: Vec<&str> = found.steps.iter().map(|s| s.command.as_str()).collect();
        assert_eq!(
            commands,
            [
                "grpcurl -plaintext localhost:50051 list",
                "grpcurl -plaintext   localhost:50051 grpc.health.v1.Health/Check",
            ]
        );
    }

    #[test]
    fn an_output_block_belongs_to_the_last_command_before_it() {
        let md = "\
```sh
grpcurl a
grpcurl b
```

It answers:

```json
{\"status\": \"SERVING\"}
```

```sh
grpcurl c
```
```text
one
two
```
";
        let steps = walkthrough(md).unwrap().steps;
        let outputs: Vec<Option<Output>> = steps.into_iter().map(|s| s.output).collect();
        assert_eq!(
            outputs,
            [
                None,
                Some(Output::Json(json!({"status": "SERVING"}))),
                Some(Output::Text("one\ntwo".into())),
            ]
        );
    }

    #[test]
    fn misplaced_or_broken_blocks_are_named() {
        let cases = [
            (
                "```json\n{}\n```\n",
                "a ```json block before any grpcurl command",
            ),
            (
                "```sh\ngrpcurl a\n```\n```text\nx\n```\n```json\n{}\n```\n",
                "a second output block for `grpcurl a`",
            ),
            (
                "```sh\ngrpcurl a\n```\n```json\n{\n```\n",
                "the output shown for `grpcurl a`: EOF while parsing an object at line 2 column 0",
            ),
            ("```sh\ngrpcurl a\n", "a ```sh block is not closed"),
            (
                "```sh\nexport T=$(logi -- token --sub 1)\n```\n",
                "`export T=$(logi -- token --sub 1)` has no --role",
            ),
        ];
        for (md, error) in cases {
            assert_eq!(walkthrough(md), Err(error.to_owned()), "{md}");
        }
    }

    #[test]
    fn a_section_ends_at_the_next_heading_of_its_level() {
        let md = "# Title\n## One\na\n### Sub\n```sh\n# a comment\n```\n## Two\nc\n";
        assert_eq!(
            section(md, "One"),
            Some("a\n### Sub\n```sh\n# a comment\n```\n")
        );
        assert_eq!(section(md, "Two"), Some("c\n"));
        assert_eq!(section(md, "Three"), None);
    }
}
