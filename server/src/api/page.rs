//! Pagination of every list endpoint: `?limit=N` (default [`DEFAULT_LIMIT`], at most
//! [`MAX_LIMIT`]) and an opaque `?page_token=...` from the previous page. The body keeps its
//! shape (an object holding the array), so clients that read one page still work; the next page
//! is announced GitHub-style in `Link: <URL>; rel="next"`, and `X-Total-Count` gives the number
//! of items across all pages.
//!
//! Cursors are keyset, not offsets: a token holds the sort key of the last item sent, and the
//! next page starts after it, so an item added or removed meanwhile neither repeats nor skips
//! another one.

use actix_web::{HttpRequest, HttpResponse};
use paas_common::ErrorCode;
use serde::Serialize;

use crate::error::{ApiResult, Error};

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

/// The query parameters, documented on every list operation.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Only its OpenAPI description is used; `Page::from_request` parses.
pub struct PageParams {
    /// Items per page, 1 to 1000 (default 100).
    limit: Option<u32>,
    /// The `page_token` of the `Link: <...>; rel="next"` URL of the previous page.
    page_token: Option<String>,
}

/// Where a page starts and how long it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub limit: usize,
    /// The sort key of the last item of the previous page.
    pub after: Option<String>,
}

const TOKEN_PREFIX: &str = "p1.";

pub fn encode_token(key: &str) -> String {
    format!("{TOKEN_PREFIX}{}", hex::encode(key.as_bytes()))
}

fn decode_token(token: &str) -> Option<String> {
    let raw = hex::decode(token.strip_prefix(TOKEN_PREFIX)?).ok()?;
    String::from_utf8(raw).ok()
}

impl Page {
    /// Reads `limit` and `page_token` from the query string; anything else in it is left to the
    /// handler's own extractor.
    pub fn from_request(req: &HttpRequest) -> ApiResult<Page> {
        let mut page = Page {
            limit: DEFAULT_LIMIT,
            after: None,
        };
        for (k, v) in url::form_urlencoded::parse(req.query_string().as_bytes()) {
            match k.as_ref() {
                "limit" => {
                    page.limit = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            Error::api(
                                ErrorCode::InvalidLimit,
                                format!(
                                    "limit must be a whole number from 1 to {MAX_LIMIT}, not {v:?}"
                                ),
                            )
                        })?;
                }
                "page_token" => {
                    page.after = Some(decode_token(&v).ok_or_else(|| {
                        Error::api(
                            ErrorCode::InvalidPageToken,
                            "page_token is not one this server gave out; start from the first page",
                        )
                    })?);
                }
                _ => {}
            }
        }
        Ok(page)
    }

    /// One page of `items`, which are in display order and whose `key`s are unique and
    /// ascending (`descending` false) or descending in that order. Returns the page and the
    /// cursor of the next one, if there is more.
    pub fn slice<T>(
        &self,
        items: Vec<T>,
        key: impl Fn(&T) -> String,
        descending: bool,
    ) -> (Vec<T>, Option<String>) {
        let mut rest: Vec<T> = match &self.after {
            None => items,
            Some(after) => items
                .into_iter()
                .filter(|i| {
                    let k = key(i);
                    if descending {
                        k < *after
                    } else {
                        k > *after
                    }
                })
                .collect(),
        };
        if rest.len() <= self.limit {
            return (rest, None);
        }
        rest.truncate(self.limit);
        let next = rest.last().map(&key);
        (rest, next)
    }
}

/// A sort key for numbers that orders like the numbers.
pub fn num_key(n: i64) -> String {
    format!("{:020}", n.max(0))
}

/// The 200 answer of a list: `body` as JSON, `Link` to the next page when there is one,
/// `X-Total-Count` when known.
pub fn respond<B: Serialize>(
    req: &HttpRequest,
    body: &B,
    next: Option<String>,
    total: Option<u64>,
) -> HttpResponse {
    let mut resp = HttpResponse::Ok();
    if let Some(key) = next {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in url::form_urlencoded::parse(req.query_string().as_bytes()) {
            if k != "page_token" {
                query.append_pair(&k, &v);
            }
        }
        query.append_pair("page_token", &encode_token(&key));
        let info = req.connection_info();
        let url = format!(
            "{}://{}{}?{}",
            info.scheme(),
            info.host(),
            req.path(),
            query.finish()
        );
        resp.insert_header(("Link", format!("<{url}>; rel=\"next\"")));
    }
    if let Some(n) = total {
        resp.insert_header(("X-Total-Count", n.to_string()));
    }
    resp.json(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn page(q: &str) -> ApiResult<Page> {
        Page::from_request(&TestRequest::with_uri(&format!("/v1/apps?{q}")).to_http_request())
    }

    #[test]
    fn parses_limit_and_token() {
        assert_eq!(page("").unwrap().limit, DEFAULT_LIMIT);
        assert_eq!(page("limit=5").unwrap().limit, 5);
        let t = encode_token("web");
        assert_eq!(
            page(&format!("limit=2&page_token={t}")).unwrap(),
            Page {
                limit: 2,
                after: Some("web".into())
            }
        );
        for bad in ["limit=0", "limit=1001", "limit=x", "limit=-1"] {
            assert!(
                matches!(
                    page(bad),
                    Err(Error::Api {
                        code: ErrorCode::InvalidLimit,
                        ..
                    })
                ),
                "{bad}"
            );
        }
        for bad in ["page_token=zz", "page_token=p1.zz", "page_token="] {
            assert!(
                matches!(
                    page(bad),
                    Err(Error::Api {
                        code: ErrorCode::InvalidPageToken,
                        ..
                    })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn walks_every_item_once_in_both_directions() {
        let items: Vec<i64> = (1..=7).collect();
        for descending in [false, true] {
            let mut items = items.clone();
            if descending {
                items.reverse();
            }
            let mut seen = Vec::new();
            let mut p = Page {
                limit: 3,
                after: None,
            };
            loop {
                let (got, next) = p.slice(items.clone(), |n| num_key(*n), descending);
                seen.extend(got);
                match next {
                    Some(k) => p.after = Some(k),
                    None => break,
                }
            }
            assert_eq!(seen, items);
        }
    }
}
