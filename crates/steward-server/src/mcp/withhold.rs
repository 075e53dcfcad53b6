//! What an answer passes on of the resources it holds: a read's contents
//! of other resources, and the resources a tool's result or a prompt's
//! messages embed (in content blocks, in structured content, in JSON a text
//! block holds) are decided as reads of their own, and those the agent may
//! not read are withheld.

use rmcp::ErrorData as McpError;
use rmcp::model::{ContentBlock, ReadResourceResult, ResourceContents, ServerResult};
use serde_json::{Map, Value};

use super::GatewayCall;
use super::govern::{self, canonical_uri};
use super::proxy::steward_error;

/// The URI of a resource's contents, in the spelling it is decided in
/// (empty for a kind of contents this gateway does not know, which no
/// policy allows).
fn contents_uri(contents: &ResourceContents) -> String {
    match contents {
        ResourceContents::TextResourceContents { uri, .. }
        | ResourceContents::BlobResourceContents { uri, .. } => canonical_uri(uri),
        _ => String::new(),
    }
}

/// Whether each item of an answer to `method` on `requested` may be passed
/// on, given the resource each holds (`None`: none). A resource other than
/// `read` (the one a read asked for, decided before it) is decided as a
/// read of its own, with one audit entry for the answer; an answer holding
/// no other resource costs nothing.
async fn passed_on(
    call: &GatewayCall,
    method: &str,
    requested: &str,
    read: Option<&str>,
    uris: &[Option<String>],
) -> Result<Vec<bool>, McpError> {
    fn other<'a>(u: &'a Option<String>, read: Option<&str>) -> Option<&'a str> {
        u.as_deref().filter(|u| Some(*u) != read)
    }
    let mut others: Vec<String> = uris
        .iter()
        .filter_map(|u| other(u, read))
        .map(String::from)
        .collect();
    if others.is_empty() {
        return Ok(vec![true; uris.len()]);
    }
    others.sort();
    others.dedup();
    let readable = govern::readable_contents(call, method, requested, &others)
        .await
        .map_err(steward_error)?;
    Ok(uris
        .iter()
        .map(|u| other(u, read).is_none_or(|u| readable.contains(u)))
        .collect())
}

/// The contents of a read of `requested` the agent may see. Contents of
/// another resource (a directory's files, say) are decided as reads of
/// their own, and those the agent may not read are left out.
pub(super) async fn withhold_contents(
    call: &GatewayCall,
    requested: &str,
    mut result: ReadResourceResult,
) -> Result<ServerResult, McpError> {
    let uris: Vec<Option<String>> = result
        .contents
        .iter()
        .map(|c| Some(contents_uri(c)))
        .collect();
    let keep = passed_on(call, "resources/read", requested, Some(requested), &uris).await?;
    let mut keep = keep.into_iter();
    result.contents.retain(|_| keep.next().unwrap_or(false));
    Ok(ServerResult::ReadResourceResult(result))
}

/// What a resource the agent may not read becomes where it was embedded.
fn withheld_note(uri: &str) -> String {
    format!("[Steward withheld the resource '{uri}' here: this agent may not read it]")
}

/// Resources embedded in an answer to `method` on `name` (a tool's result,
/// a prompt's messages), decided as reads: one the agent may not read is
/// replaced with a note saying so, as `resources/read` would refuse it.
/// They are looked for wherever an answer can carry one: embedded resource
/// blocks, and resource contents in JSON (see [`json_contents`]) in a
/// tool's `structured` content and in a text block holding JSON (the
/// structured content's serialized copy, which the specification asks a
/// tool to add), so that what is withheld in one place cannot come through
/// in another. One audit entry covers them all.
pub(super) async fn withhold_embedded(
    call: &GatewayCall,
    method: &str,
    name: &str,
    blocks: Vec<&mut ContentBlock>,
    structured: Option<&mut Value>,
) -> Result<(), McpError> {
    let mut texts: Vec<Option<Value>> = blocks.iter().map(|b| json_text(b)).collect();
    let mut uris: Vec<Option<String>> = blocks
        .iter()
        .map(|b| match b {
            ContentBlock::Resource(e) => Some(contents_uri(&e.resource)),
            _ => None,
        })
        .collect();
    let mut in_json = Vec::new();
    for value in structured
        .as_deref()
        .into_iter()
        .chain(texts.iter().flatten())
    {
        json_contents(value, &mut in_json);
    }
    let embedded = uris.len();
    uris.extend(in_json.into_iter().map(Some));
    let keep = passed_on(call, method, name, None, &uris).await?;
    let (keep_blocks, keep_json) = keep.split_at(embedded);
    let mut keep_json = keep_json.iter().copied();
    if let Some(structured) = structured {
        withhold_json(structured, &mut keep_json);
    }
    for (((block, text), uri), keep) in blocks
        .into_iter()
        .zip(&mut texts)
        .zip(uris)
        .zip(keep_blocks)
    {
        if !keep {
            *block = ContentBlock::text(withheld_note(&uri.unwrap_or_default()));
        } else if let (ContentBlock::Text(t), Some(json)) = (block, text)
            && withhold_json(json, &mut keep_json)
        {
            t.text = json.to_string();
        }
    }
    Ok(())
}

/// The JSON a text block holds, if it is a JSON object or array that may
/// hold resource contents: text that spells no `uri` (not even escaped) is
/// not parsed, which keeps large plain answers off the parser.
fn json_text(block: &ContentBlock) -> Option<Value> {
    match block {
        ContentBlock::Text(t)
            if t.text.trim_start().starts_with(['{', '['])
                && (t.text.contains("uri") || t.text.contains("\\u")) =>
        {
            serde_json::from_str(&t.text).ok()
        }
        _ => None,
    }
}

/// The URI of `object`, if it is a resource's contents: a string `uri`
/// with a `text` or a `blob`, the shape MCP gives them (in an embedded
/// resource, a read's answer, or JSON a tool answers with).
fn contents_uri_in(object: &Map<String, Value>) -> Option<&str> {
    object
        .get("uri")
        .and_then(Value::as_str)
        .filter(|_| object.contains_key("text") || object.contains_key("blob"))
}

/// The resources' contents in `value`, at any depth (those nested in
/// others' too), in the order [`withhold_json`] meets them: their URIs in
/// the spelling they are decided in. Links to resources (a `uri` alone)
/// are left as they are, in JSON as in content blocks.
fn json_contents(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            if let Some(uri) = contents_uri_in(object) {
                found.push(canonical_uri(uri));
            }
            object.values().for_each(|v| json_contents(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| json_contents(v, found)),
        _ => {}
    }
}

/// Withhold the resources' contents in `value` that `keep` (one answer for
/// each that [`json_contents`] found, in its order) does not pass on: each
/// becomes its `uri` with the note as its `text`, nothing else of it kept.
/// Whether any was withheld.
fn withhold_json(value: &mut Value, keep: &mut impl Iterator<Item = bool>) -> bool {
    match value {
        Value::Object(object) => {
            let Some(uri) = contents_uri_in(object) else {
                let mut withheld = false;
                for v in object.values_mut() {
                    withheld |= withhold_json(v, keep);
                }
                return withheld;
            };
            if keep.next().unwrap_or(false) {
                let mut withheld = false;
                for v in object.values_mut() {
                    withheld |= withhold_json(v, keep);
                }
                return withheld;
            }
            // What is nested in it goes with it: their answers are passed.
            let mut nested = Vec::new();
            object.values().for_each(|v| json_contents(v, &mut nested));
            nested.iter().for_each(|_| {
                keep.next();
            });
            let note = withheld_note(&canonical_uri(uri));
            let uri = Value::from(uri);
            *object = Map::from_iter([("uri".to_string(), uri), ("text".into(), note.into())]);
            true
        }
        Value::Array(items) => {
            let mut withheld = false;
            for v in items {
                withheld |= withhold_json(v, keep);
            }
            withheld
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{json_contents, withheld_note, withhold_json};

    /// Resource contents are found at any depth, in one order, and those
    /// not kept become their URI with the note; links and the rest stay.
    #[test]
    fn resource_contents_in_json_are_found_and_withheld_in_one_order() {
        let mut value = json!({
            "items": [
                {"uri": "DEMO://s/./a", "mimeType": "text/plain", "text": "a", "extra": 1},
                {"uri": "demo://s/b", "blob": "Yg=="},
            ],
            "embedded": {"type": "resource", "resource": {"uri": "demo://s/%63", "text": "c"}},
            "link": {"type": "resource_link", "uri": "demo://s/a", "name": "a"},
            "plain": "demo://s/a",
        });
        let mut found = Vec::new();
        json_contents(&value, &mut found);
        let mut sorted = found.clone();
        sorted.sort();
        assert_eq!(sorted, ["demo://s/a", "demo://s/b", "demo://s/c"]);
        let keep: Vec<bool> = found.iter().map(|u| u == "demo://s/b").collect();
        assert!(withhold_json(&mut value, &mut keep.into_iter()));
        assert_eq!(
            value,
            json!({
                "items": [
                    {"uri": "DEMO://s/./a", "text": withheld_note("demo://s/a")},
                    {"uri": "demo://s/b", "blob": "Yg=="},
                ],
                "embedded": {"type": "resource", "resource": {
                    "uri": "demo://s/%63", "text": withheld_note("demo://s/c")}},
                "link": {"type": "resource_link", "uri": "demo://s/a", "name": "a"},
                "plain": "demo://s/a",
            })
        );
        let mut none = json!({"a": [1, "x"]});
        assert!(!withhold_json(&mut none, &mut std::iter::empty()));
    }

    /// Contents nested in contents are decided too: inside a kept one, each
    /// on its own answer; inside a withheld one, they go with it, and the
    /// answers of what follows stay in step.
    #[test]
    fn contents_nested_in_contents_are_decided() {
        let mut value = json!([
            {"uri": "demo://dir", "text": "d", "children": [{"uri": "demo://secret", "text": "s"}]},
            {"uri": "demo://gone", "text": "g", "children": [{"uri": "demo://inner", "text": "i"}]},
            {"uri": "demo://after", "text": "a"},
        ]);
        let mut found = Vec::new();
        json_contents(&value, &mut found);
        assert_eq!(
            found,
            [
                "demo://dir",
                "demo://secret",
                "demo://gone",
                "demo://inner",
                "demo://after"
            ]
        );
        let keep = [true, false, false, true, true];
        assert!(withhold_json(&mut value, &mut keep.into_iter()));
        assert_eq!(
            value,
            json!([
                {"uri": "demo://dir", "text": "d", "children": [
                    {"uri": "demo://secret", "text": withheld_note("demo://secret")}]},
                {"uri": "demo://gone", "text": withheld_note("demo://gone")},
                {"uri": "demo://after", "text": "a"},
            ])
        );
    }
}
