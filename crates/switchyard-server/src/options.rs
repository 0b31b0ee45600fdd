//! Reads the option objects users write, from wherever they come (the JavaScript values
//! of the addon's calls; any other [`Source`] that can say what a name holds), refusing a
//! bad value with a message that names the option: a typo or a string where a number
//! belongs fails at the call that made it rather than later, somewhere else.

use serde_json::Value;
use switchyard_core::schema::{Range, Setting};

/// What an option holds, as its source gives it. An object stays the source's own, read
/// when asked for.
pub enum Given<O> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, perhaps not finite (`NaN`) or not whole.
    Number(f64),
    /// A string.
    Text(String),
    /// An array, each item as given.
    List(Vec<Given<O>>),
    /// An object, left to the source to read.
    Object(O),
    /// A function, which the source keeps (only JavaScript has them).
    Function,
    /// What no option takes, in words: `"a function"`, `"a symbol"`.
    Other(&'static str),
}

impl<O> Given<O> {
    /// For an error message: `-1`, `"30000" (a string)`, `NaN`.
    pub fn describe(&self) -> String {
        match self {
            Given::Null => "null".into(),
            Given::Bool(_) => "a boolean".into(),
            Given::Number(n) => n.to_string(),
            Given::Text(s) => format!("{:?} (a string)", truncate(s)),
            Given::List(_) => "an array".into(),
            Given::Object(_) => "an object".into(),
            Given::Function => "a function".into(),
            Given::Other(what) => (*what).into(),
        }
    }
}

fn truncate(s: &str) -> &str {
    s.char_indices().nth(40).map_or(s, |(end, _)| &s[..end])
}

/// Where options come from: a handle on the source, cheap to copy, that reads its objects.
pub trait Source: Clone {
    /// An object of the source's own (a JavaScript object, for the addon).
    type Object;
    /// The error that refuses an option, made by [`Source::refuse`].
    type Error;
    /// The names `object` holds, so that an unknown one can be refused.
    fn keys(&self, object: &Self::Object) -> Result<Vec<String>, Self::Error>;
    /// What `name` holds; `None` when it is absent (or JavaScript's `undefined`).
    fn get(&self, object: &Self::Object, name: &str) -> Result<Option<Given<Self::Object>>, Self::Error>;
    /// What `name` holds, as the source writes it as JSON (JavaScript: as `JSON.stringify`
    /// does, so `toJSON`, a `Date` and a dropped `undefined` behave as in `res.json`).
    fn json(&self, object: &Self::Object, name: &str) -> Result<Option<Value>, Self::Error>;
    /// The error that refuses an option, saying why.
    fn refuse(&self, message: String) -> Self::Error;
}

/// A plain options object (or nothing), checked against the names it may contain.
pub struct Options<S: Source> {
    source: S,
    object: Option<S::Object>,
}

impl<S: Source> Options<S> {
    /// `what` names the object in errors (`config`, `options`). Nothing and `null` read
    /// as an empty object; anything else that is not an object is refused, as is a key
    /// not in `known`.
    pub fn new(source: S, given: Option<Given<S::Object>>, what: &str, known: &[&str]) -> Result<Self, S::Error> {
        let object = match given {
            None | Some(Given::Null) => None,
            Some(Given::Object(object)) => Some(object),
            Some(other) => return Err(source.refuse(format!("{what} must be an object, got {}", other.describe()))),
        };
        if let Some(object) = &object {
            if let Some(key) = source.keys(object)?.into_iter().find(|key| !known.contains(&key.as_str())) {
                let expected = known.join(", ");
                return Err(source.refuse(format!("unknown option {key:?} in {what}; expected one of: {expected}")));
            }
        }
        Ok(Self { source, object })
    }

    /// The object itself, for what only its source can read (a JavaScript function).
    pub fn object(&self) -> Option<&S::Object> {
        self.object.as_ref()
    }

    /// What `name` holds, or `None` when it is not given.
    pub fn get(&self, name: &str) -> Result<Option<Given<S::Object>>, S::Error> {
        match &self.object {
            Some(object) => self.source.get(object, name),
            None => Ok(None),
        }
    }

    /// The source's error refusing an option, saying why.
    pub fn refuse(&self, message: String) -> S::Error {
        self.source.refuse(message)
    }

    /// Refuses what `name` holds: it `must` be something else.
    fn refused(&self, name: &str, must: &str, given: &Given<S::Object>) -> S::Error {
        self.refuse(format!("{name} must be {must}, got {}", given.describe()))
    }

    /// A whole number within `range`.
    fn whole_number(&self, name: &str, range: Range) -> Result<Option<u64>, S::Error> {
        match self.get(name)? {
            None => Ok(None),
            Some(Given::Number(n)) if n.is_finite() && n.fract() == 0.0 && n >= range.min as f64 && n <= range.max as f64 => {
                Ok(Some(n as u64))
            }
            Some(other) => Err(self.refused(name, &format!("a whole number from {} to {}", range.min, range.max), &other)),
        }
    }

    /// A whole number setting of the option schema, within its bounds there, by the last
    /// part of its JS path.
    pub fn setting(&self, setting: &Setting) -> Result<Option<u64>, S::Error> {
        let name = setting.js_name().expect("a setting the addon reads has a JS name");
        self.whole_number(name, setting.range.expect("a whole number setting has bounds"))
    }

    /// A whole number from 1 to `max`.
    pub fn positive_integer(&self, name: &str, max: u64) -> Result<Option<u64>, S::Error> {
        self.whole_number(name, Range { min: 1, max })
    }

    /// A whole number from 0 to `max`.
    pub fn count(&self, name: &str, max: u64) -> Result<Option<u64>, S::Error> {
        self.whole_number(name, Range { min: 0, max })
    }

    /// A finite number greater than 0 (fractions allowed).
    pub fn positive_number(&self, name: &str) -> Result<Option<f64>, S::Error> {
        match self.get(name)? {
            None => Ok(None),
            Some(Given::Number(n)) if n.is_finite() && n > 0.0 => Ok(Some(n)),
            Some(other) => Err(self.refused(name, "a number greater than 0", &other)),
        }
    }

    /// Whether `name` is given at all.
    pub fn has(&self, name: &str) -> Result<bool, S::Error> {
        Ok(self.get(name)?.is_some())
    }

    /// Whether function `name` is given; anything else there is refused.
    pub fn function(&self, name: &str) -> Result<bool, S::Error> {
        match self.get(name)? {
            None => Ok(false),
            Some(Given::Function) => Ok(true),
            Some(other) => Err(self.refused(name, "a function", &other)),
        }
    }

    /// `true` or `false`.
    pub fn boolean(&self, name: &str) -> Result<Option<bool>, S::Error> {
        match self.get(name)? {
            None => Ok(None),
            Some(Given::Bool(b)) => Ok(Some(b)),
            Some(other) => Err(self.refused(name, "true or false", &other)),
        }
    }

    /// A string.
    pub fn string(&self, name: &str) -> Result<Option<String>, S::Error> {
        match self.get(name)? {
            None => Ok(None),
            Some(Given::Text(text)) => Ok(Some(text)),
            Some(other) => Err(self.refused(name, "a string", &other)),
        }
    }

    /// An array of strings.
    pub fn strings(&self, name: &str) -> Result<Option<Vec<String>>, S::Error> {
        match self.get(name)? {
            None => Ok(None),
            Some(Given::List(items)) if items.iter().all(|item| matches!(item, Given::Text(_))) => {
                Ok(Some(items.into_iter().filter_map(|item| if let Given::Text(text) = item { Some(text) } else { None }).collect()))
            }
            Some(other) => Err(self.refused(name, "an array of strings", &other)),
        }
    }

    /// A string that must be one of `choices`.
    pub fn choice(&self, name: &str, choices: &[&'static str]) -> Result<Option<&'static str>, S::Error> {
        let Some(text) = self.string(name)? else { return Ok(None) };
        match choices.iter().find(|choice| **choice == text) {
            Some(choice) => Ok(Some(choice)),
            None => {
                let choices = choices.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>().join(" or ");
                Err(self.refuse(format!("{name} must be one of {choices}, got {text:?}")))
            }
        }
    }

    /// A nested options object, read with the same rules.
    pub fn nested(&self, name: &str, known: &[&str]) -> Result<Options<S>, S::Error> {
        Options::new(self.source.clone(), self.get(name)?, name, known)
    }

    /// Any JSON value (`null` included).
    pub fn json(&self, name: &str) -> Result<Option<Value>, S::Error> {
        match &self.object {
            Some(object) => self.source.json(object, name),
            None => Ok(None),
        }
    }
}
