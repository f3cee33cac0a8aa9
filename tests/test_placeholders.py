"""String placeholders: the masking rules, exact round trips, the tokenize stage, and a Translator
that masks its input and restores its output on its own."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from nmt import placeholders as P
from nmt.batching import collate
from nmt.cl100k import base_encoding
from nmt.config import ModelConfig
from nmt.data.tokenized import TokenizedSplit, load_literals
from nmt.decoding.translator import Translator
from nmt.model import Transformer
from nmt.stages.tokenize import tokenize_dataset
from nmt.tokenizer import Tokenizer
from nmt.training import validate as train_module

from .conftest import PLAIN_TOKENIZE, plain_tokenize, write_jsonl


# ---------------------------------------------------------------------- the rules
@pytest.mark.parametrize("nl, literals", [
    ("call warn with string 'get_cache is deprecated'.", ["get_cache is deprecated"]),
    ('raise an error with string "You must define a \'%s\' cache", replace \'%s\' with alias.',
     ["You must define a '%s' cache", "%s"]),
    ("if the file's size doesn't match, return None.", []),  # apostrophes open nothing
    ("append string 'Don't panic' to x.", ["Don't panic"]),  # ... and close nothing
    ("string 'couldn\\'t be interpreted', and 'b'.", ["couldn\\'t be interpreted", "b"]),  # escaped quote
    ("location is 'LOCATION' or '', then 'LOCATION' again.", ["LOCATION"]),  # empty skipped, repeats share
    ("string 'no closing quote", []),
    ("'at the start' and at the end 'x'", ["at the start", "x"]),
    ("nothing _STR:0_ 'here'", []),  # already shaped like a placeholder: left alone
])
def test_description_literals(nl, literals):
    assert P.mask_description(nl).literals == literals


def test_a_pair_shares_placeholders_and_keeps_quotes_and_prefixes():
    nl = "call f with raw string '^a+$', string \"x\" and 'x', and string 'unused'."
    code = "f ( r'^a+$' , 'x' , \"x\" , 'other' , '' )"
    masked_nl, masked_code, literals = P.mask_pair(nl, code)
    assert literals == ["^a+$", "x", "unused"]
    assert masked_nl == "call f with raw string '_STR:0_', string \"_STR:1_\" and '_STR:1_', and string '_STR:2_'."
    assert masked_code == "f ( r'_STR:0_' , '_STR:1_' , \"_STR:1_\" , 'other' , '' )"
    assert P.restore(masked_code, literals) == code and P.restore(masked_nl, literals) == nl
    assert P.coverage(nl, code) == (5, 3)  # five literals in the code, three covered


def test_code_outside_string_literals_is_never_touched():
    nl = "substitute string 'x' for x, call 'len'."
    masked_nl, masked_code, _ = P.mask_pair(nl, "x = 'x' # x 'len'\nlen ( x )")
    assert masked_code == "x = '_STR:0_' # x 'len'\nlen ( x )"  # a comment is no literal


def test_restore_ignores_placeholders_without_a_literal():
    assert P.restore("f ( '_STR:0_' , '_STR:7_' )", ["a"]) == "f ( 'a' , '_STR:7_' )"


def test_restore_is_one_pass_even_if_a_literal_looks_like_a_placeholder_start():
    assert P.restore("_STR:0__STR:1_", ["_STR:", "1_"]) == "_STR:1_"


quoteish = st.text(alphabet=st.sampled_from(list("ab x'\"\\_:STR01().,#\n\r\u2028")), max_size=40)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=60), quoteish), st.one_of(st.text(max_size=60), quoteish))
def test_masking_any_pair_is_exactly_reversible(nl, code):
    masked_nl, masked_code, literals = P.mask_pair(nl, code)
    assert P.restore(masked_nl, literals) == nl
    assert P.restore(masked_code, literals) == code
    m = P.mask_description(nl)
    assert P.restore(m.text, m.literals) == nl
    assert len(set(literals)) == len(literals) and "" not in literals


body = st.text(alphabet=st.characters(blacklist_characters="'\\", blacklist_categories=["Cs", "Cc"]),
               min_size=1, max_size=12).filter(lambda b: not P.PATTERN.search(b))


@settings(max_examples=200, deadline=None)
@given(st.lists(body, min_size=1, max_size=4))
def test_every_quoted_literal_of_the_description_covers_the_same_literal_of_the_code(bodies):
    nl = "call f with " + ", ".join(f"string '{b}'" for b in bodies) + "."
    code = "f ( " + " , ".join(f"'{b}'" for b in bodies) + " )"
    masked_nl, masked_code, literals = P.mask_pair(nl, code)
    assert literals == list(dict.fromkeys(bodies))
    assert P.coverage(nl, code) == (len(bodies), len(bodies))
    assert masked_code == "f ( " + " , ".join(f"'_STR:{literals.index(b)}_'" for b in bodies) + " )"
    assert P.restore(masked_code, literals) == code and P.restore(masked_nl, literals) == nl


# ---------------------------------------------------------------------- the tokenize stage
PAIRS = [
    {"nl": "call warn with string 'old api'.", "code": "warn ( 'old api' )"},
    {"nl": 'set name to string "bob".', "code": 'name = "bob"'},
    {"nl": "return 'a' joined with 'b'.", "code": "return 'a' + 'b'"},
    {"nl": "print x.", "code": "print ( x )"},
]


@pytest.fixture()
def tokenized(tmp_path):
    raw = tmp_path / "raw"
    for split in ("train", "dev", "test"):
        write_jsonl(raw / f"{split}.jsonl", PAIRS * 3)
    out = tmp_path / "tok"
    stats = tokenize_dataset(raw, out, plain_tokenize(min_freq=1, string_placeholders=True))
    return out, stats


def test_tokenize_stage_masks_records_the_setting_and_the_literals(tokenized):
    out, stats = tokenized
    tok = Tokenizer.load(out / "vocab.json")
    assert tok.string_placeholders and json.loads((out / "vocab.json").read_text())["string_placeholders"] is True
    split = TokenizedSplit.load(out / "train.safetensors", tok.vocab_size)
    assert tok.decode(split.tgt(0)) == "warn ( '_STR:0_' )"
    assert tok.decode(split.src(2)) == "return '_STR:0_' joined with '_STR:1_'."
    literals = load_literals(out, "dev", len(PAIRS))
    assert literals == [["old api"], ["bob"], ["a", "b"], []]
    assert P.restore(tok.decode(split.tgt(2)), literals[2]) == PAIRS[2]["code"]
    assert stats["splits"]["dev"]["string_placeholders"]["covered"] == 3 * 4
    assert stats["splits"]["dev"]["string_placeholders"]["covered_pct"] == 100.0


def test_the_vocabulary_keeps_the_placeholder_tokens_however_rare(tokenized):
    out, _ = tokenized
    tok = Tokenizer.load(out / "vocab.json")
    for text in ("x = '_STR:42_'", 'f ( "_STR:97_" )', "f ( '_STR:3_', \"_STR:12_\" )"):
        # Each cl100k token is one id: none of them fell back to its bytes.
        assert len(tok.encode(text)) == len(base_encoding().encode_ordinary(text)), text
    too_rare = Tokenizer.build(["x = 'a'"] * 2, 1, 1000)
    assert len(too_rare.encode("x = '_STR:42_'")) > len(base_encoding().encode_ordinary("x = '_STR:42_'"))


def test_tokenizer_files_without_the_setting_still_load_and_mean_off(tmp_path):
    tok = Tokenizer.build(["a b c"] * 2, 1, 100)
    tok.save(tmp_path / "v.json")
    assert "string_placeholders" not in json.loads((tmp_path / "v.json").read_text())
    assert not Tokenizer.load(tmp_path / "v.json").string_placeholders


def test_dev_scoring_during_training_compares_restored_text(tokenized):
    out, _ = tokenized
    tok = Tokenizer.load(out / "vocab.json")
    split = TokenizedSplit.load(out / "dev.safetensors", tok.vocab_size)
    dev = train_module.make_dev_set(split, tok, 0, 10_000, load_literals(out, "dev", len(split)))
    assert dev.references == [p["code"] for p in PAIRS * 3]


# ---------------------------------------------------------------------- end to end
TEMPLATES = [("call warn with string '{}'.", "warn ( '{}' )"),
             ('set name to string "{}".', 'name = "{}"')]


def test_translator_masks_the_input_and_restores_literals_it_never_saw(tmp_path):
    """A tiny model trained on masked pairs writes placeholders; the Translator puts the literals back."""
    words = ["old api", "bob", "x y z", "hello", "a-b", "Q"]
    pairs = [(nl.format(w), code.format(w)) for nl, code in TEMPLATES for w in words]
    masked = [P.mask_pair(nl, code)[:2] for nl, code in pairs]
    tok = Tokenizer.build([t for pair in masked for t in pair], 1, 1000, string_placeholders=True)
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=32, n_heads=2, enc_layers=1, dec_layers=1, d_ff=64, dropout=0.0, max_len=64,
                      copy=False)
    model = Transformer(cfg, tok.vocab_size, tok.pad_id)
    b = collate([tok.encode(nl) for nl, _ in masked], [tok.encode(c) for _, c in masked],
                tok.pad_id, tok.bos_id, tok.eos_id, 64)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        logits = model(b.src, b.src_mask, b.tgt_in)
        loss = F.cross_entropy(logits.reshape(-1, tok.vocab_size), b.tgt_out.reshape(-1), ignore_index=tok.pad_id)
        opt.zero_grad()
        loss.backward()
        opt.step()
    translator = Translator(model, tok, tok.bos_id, tok.eos_id)
    unseen = ["zebra crossing", "héllo wörld 😀", "%(name)s isn't here"]
    inputs = [nl.format(w) for nl, _ in TEMPLATES for w in unseen]
    expected = [code.format(w) for _, code in TEMPLATES for w in unseen]
    assert [t.text for t in translator.translate(inputs, max_len_b=20)] == expected
    assert [t.text for t in translator.translate(inputs, beam_size=3, n_best=2, max_len_b=20)] == expected
    # Without the setting the same weights see the literals themselves and do not reproduce them.
    plain = Translator(model, Tokenizer(tok.cl100k_ids), tok.bos_id, tok.eos_id)
    assert [t.text for t in plain.translate(inputs, max_len_b=20)] != expected


# ---------------------------------------------------------------------- names (tokenize.name_placeholders)
@pytest.mark.parametrize("word, code_like", [
    ("strip_tags", True), ("__init__", True), ("HttpResponse", True), ("utf8", True), ("_meta", True),
    ("value", False), ("The", False), ("x", False), ("I", False),
])
def test_code_like_names_are_told_from_english_words(word, code_like):
    assert P.is_code_like(word) is code_like


def test_names_share_the_numbering_with_strings_and_split_dotted_names():
    nl = "call the function warn with string 'get_cache is deprecated', and category six.RemovedInDjango19Warning."
    code = "warn ( 'get_cache is deprecated' , six . RemovedInDjango19Warning )"
    masked_nl, masked_code, literals = P.mask_pair(nl, code, names=True)
    assert literals == ["get_cache is deprecated", "RemovedInDjango19Warning"]
    assert masked_nl == "call the function warn with string '_STR:0_', and category six._ID:1_."
    assert masked_code == "warn ( '_STR:0_' , six . _ID:1_ )"
    # a name quoted as a string elsewhere keeps the two kinds apart
    nl2, code2, lits2 = P.mask_pair("if 'strip_tags' is in value and strip_tags is true",
                                    "if 'strip_tags' in value and strip_tags :", names=True)
    assert code2 == "if '_STR:0_' in value and _ID:1_ :" and lits2 == ["strip_tags", "strip_tags"]
    # off by default: the string-only behaviour is unchanged
    assert P.mask_pair(nl, code)[1] == "warn ( '_STR:0_' , six . RemovedInDjango19Warning )"


identifierish = st.text(alphabet=st.sampled_from(list("aB_1 .'\"x:ID()STR")), max_size=40)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=60), identifierish), st.one_of(st.text(max_size=60), identifierish))
def test_masking_names_is_exactly_reversible(nl, code):
    masked_nl, masked_code, literals = P.mask_pair(nl, code, names=True)
    assert P.restore(masked_nl, literals) == nl
    assert P.restore(masked_code, literals) == code


def _tokenize_allow_lazy(tmp_path, placeholder_tokens: bool) -> tuple[Tokenizer, TokenizedSplit]:
    """The tokenize stage on three identical splits of one pair with two names; (tokenizer, train split)."""
    raw = tmp_path / "raw"
    pairs = [{"nl": "call allow_lazy with remove_tags.", "code": "allow_lazy ( remove_tags )"}] * 3
    for split in ("train", "dev", "test"):
        write_jsonl(raw / f"{split}.jsonl", pairs)
    cfg = plain_tokenize(min_freq=1, string_placeholders=True, name_placeholders=True,
                         placeholder_tokens=placeholder_tokens)
    tokenize_dataset(raw, tmp_path / "tok", cfg)
    tok = Tokenizer.load(tmp_path / "tok" / "vocab.json")
    return tok, TokenizedSplit.load(tmp_path / "tok" / "train.safetensors", tok.vocab_size)


def test_name_placeholders_need_string_placeholders_and_travel_in_the_tokenizer_file(tmp_path):
    from nmt.errors import ConfigError
    from nmt.params import params_from_dict

    with pytest.raises(ConfigError, match="tokenize.name_placeholders"):
        params_from_dict({"tokenize": {**PLAIN_TOKENIZE, "name_placeholders": True}})
    tok, split = _tokenize_allow_lazy(tmp_path, placeholder_tokens=False)
    assert tok.name_placeholders and tok.string_placeholders
    assert tok.decode(split.tgt(0)) == "_ID:0_ ( _ID:1_ )"
    assert load_literals(tmp_path / "tok", "dev", 1) == [["allow_lazy", "remove_tags"]]


# ---------------------------------------------------------------------- rare words (tokenize.rare_words)
def test_common_words_count_descriptions_not_occurrences():
    texts = ["substitute toks for toks.", "substitute x for y.", "call foo."]
    assert P.common_words(texts, 2) == frozenset({"substitute", "for"})  # 'toks' twice in one text: 1
    assert P.common_words(texts, 1) >= {"toks", "foo", "call"}


def test_rare_plain_words_become_names_common_ones_stay():
    common = frozenset({"substitute", "for", "self", "call", "the", "method", "with", "i", "as", "an",
                        "argument", "result"})
    nl = "call the method self.check_for_whole_start_tag with i as an argument, substitute result for the endpos."
    code = "endpos = self . check_for_whole_start_tag ( i )"
    masked_nl, masked_code, literals = P.mask_pair(nl, code, names=True, common=common)
    assert literals == ["check_for_whole_start_tag", "endpos"]
    assert masked_code == "_ID:1_ = self . _ID:0_ ( i )"
    assert P.restore(masked_code, literals) == code and P.restore(masked_nl, literals) == nl
    # without `common` only the code-like name is a placeholder: 'endpos' is left for the model to spell
    assert P.mask_pair(nl, code, names=True)[1] == "endpos = self . _ID:0_ ( i )"


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=60), identifierish), st.one_of(st.text(max_size=60), identifierish),
       st.frozensets(st.sampled_from(["a", "B", "x", "ID", "STR", "aB_1"])))
def test_masking_rare_words_is_exactly_reversible(nl, code, common):
    masked_nl, masked_code, literals = P.mask_pair(nl, code, names=True, common=common)
    assert P.restore(masked_nl, literals) == nl
    assert P.restore(masked_code, literals) == code


def test_rare_words_need_name_placeholders_and_travel_in_the_tokenizer_file(tmp_path):
    from nmt.errors import ConfigError
    from nmt.params import params_from_dict

    with pytest.raises(ConfigError, match="tokenize.rare_words: needs tokenize.name_placeholders"):
        params_from_dict({"tokenize": {**PLAIN_TOKENIZE, "string_placeholders": True, "rare_words": 3}})
    raw = tmp_path / "raw"
    train = [{"nl": f"substitute {w} for x.", "code": f"x = {w}"} for w in ("toks", "value", "value", "value")]
    for split, rows in (("train", train), ("dev", [{"nl": "substitute hextet for x.", "code": "x = hextet"}]),
                        ("test", train[:1])):
        write_jsonl(raw / f"{split}.jsonl", rows)
    cfg = plain_tokenize(min_freq=1, string_placeholders=True, name_placeholders=True, rare_words=2)
    tokenize_dataset(raw, tmp_path / "tok", cfg)
    tok = Tokenizer.load(tmp_path / "tok" / "vocab.json")
    assert tok.common_words == frozenset({"substitute", "for", "x", "value"})
    train_split = TokenizedSplit.load(tmp_path / "tok" / "train.safetensors", tok.vocab_size)
    assert [tok.decode(train_split.tgt(i)) for i in range(4)] == ["x = _ID:0_"] + ["x = value"] * 3
    assert load_literals(tmp_path / "tok", "dev", 1) == [["hextet"]]
    # a tokenizer file that says so turns the Translator's masking the same way
    assert P.mask_description("substitute zebra for x.", True, tok.common_words).text == "substitute _ID:0_ for x."
    with pytest.raises(Exception, match="common_words must be a list of strings"):
        Tokenizer.from_dict({**tok.to_dict(), "common_words": "value"})


# ---------------------------------------------------------------------- placeholder tokens (tokenize.placeholder_tokens)
placeholderish = st.lists(st.one_of(
    st.text(alphabet="_IDSTR:0123456789 x'", max_size=8),
    st.builds("_{}:{}_".format, st.sampled_from(["ID", "STR", "id"]), st.integers(0, 150)),
    st.builds("_ID:0{}_".format, st.integers(0, 9)),
), max_size=8).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(placeholderish, st.text(max_size=30)), min_size=1, max_size=6))
def test_placeholder_tokens_round_trip_any_text(texts):
    tok = Tokenizer.build(["x = _ID:0_ ( '_STR:1_' )"] * 2, 1, 100, True, True, placeholder_tokens=100)
    ids, offsets = tok.encode_arrays(texts)
    for i, text in enumerate(texts):
        assert tok.decode(ids[offsets[i] : offsets[i + 1]]) == text
        assert tok.encode(text) == ids[offsets[i] : offsets[i + 1]].tolist()


def test_each_canonical_placeholder_below_k_is_one_token_of_its_own():
    tok = Tokenizer.build(["x = _ID:0_ ( '_STR:1_' )"] * 2, 1, 100, True, True, placeholder_tokens=100)
    first = tok.vocab_size - 200
    assert tok.placeholder_ids == list(range(first, tok.vocab_size))
    assert tok.encode("_STR:0_") == [first] and tok.encode("_STR:99_") == [first + 99]
    assert tok.encode("_ID:0_") == [first + 100] and tok.encode("_ID:12_") == [first + 112]
    ids = tok.encode("f ( _ID:3_ , '_STR:4_' )")
    assert ids.count(first + 103) == 1 and ids.count(first + 4) == 1
    for text in ("_ID:07_", "_ID:100_", "_id:1_", "_ID:1"):  # not canonical, out of range, not a placeholder
        assert not set(tok.encode(text)) & set(tok.placeholder_ids), text
    assert Tokenizer.build(["a"], 1, 100).placeholder_ids == []


def test_placeholder_tokens_need_string_placeholders_and_travel_in_the_tokenizer_file(tmp_path):
    from nmt.errors import ConfigError, ModelFileError
    from nmt.params import params_from_dict

    with pytest.raises(ConfigError, match="tokenize.placeholder_tokens: needs tokenize.string_placeholders"):
        params_from_dict({"tokenize": {**PLAIN_TOKENIZE, "placeholder_tokens": True}})
    tok, split = _tokenize_allow_lazy(tmp_path, placeholder_tokens=True)
    assert tok.placeholder_tokens == 100 and len(tok.placeholder_ids) == 200
    assert tok.decode(split.tgt(0)) == "_ID:0_ ( _ID:1_ )"
    # _ID:0_ | " (" | " " | _ID:1_ | " )": each placeholder is one id (cl100k spells the line in 13)
    assert len(split.tgt(0)) == 5 and split.tgt(0)[0] == tok.encode("_ID:0_")[0]
    assert not any("_ID" in tok.token_bytes(i).decode(errors="replace") for i in range(tok.vocab_size)
                   if i not in tok.placeholder_ids)  # the cl100k pieces of placeholders were not kept
    for bad in (-1, True, "100", 10**6):
        with pytest.raises(ModelFileError, match="placeholder_tokens must be an integer"):
            Tokenizer.from_dict({**tok.to_dict(), "placeholder_tokens": bad})


def test_decoding_emits_only_the_placeholders_of_its_own_source():
    """A model that would rather write _ID:1_ than anything else writes it only where the source holds it."""
    tok = Tokenizer.build(["x = _ID:0_ ( '_STR:1_' )"] * 2, 1, 100, True, True, placeholder_tokens=10)
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=16, n_heads=2, enc_layers=1, dec_layers=1, d_ff=32, dropout=0.0, max_len=32,
                      copy=False)
    for copy in (False, True):
        model = Transformer(cfg, tok.vocab_size, tok.pad_id).eval()
        if copy:
            model = Transformer(ModelConfig(**{**cfg.__dict__, "copy": True}), tok.vocab_size, tok.pad_id).eval()
        favourite = tok.encode("_ID:1_")[0]
        with torch.no_grad():
            model.embed.weight[favourite] *= 50  # the tied output projection now prefers it at every step
        translator = Translator(model, tok, tok.bos_id, tok.eos_id)
        assert bool(model.source_only.any())
        for beam in (1, 3):
            without, with_it = translator.translate(["x _ID:0_ y", "x _ID:1_ y"], beam_size=beam, max_len_b=5)
            assert favourite not in tok.encode(without.text) and "_ID:1_" not in without.text
            assert "_ID:1_" in with_it.text  # the source holds it: allowed, and preferred
    unrestricted = Transformer(cfg, tok.vocab_size, tok.pad_id).eval()
    with torch.no_grad():
        unrestricted.embed.weight[favourite] *= 50
    src = torch.tensor([tok.encode("x _ID:0_ y")])
    from nmt.decoding.search import greedy
    assert favourite in greedy(unrestricted, src, src != tok.pad_id, tok.bos_id, tok.eos_id, 5)[0].tokens


# ---------------------------------------------------------------------- prefixes the description names
@pytest.mark.parametrize("nl, code, expected", [
    ("__D is a raw string '(?P<day>\\d{2})'.", "__D = '(?P<day>\\d{2})'", "__D = r'(?P<day>\\d{2})'"),
    ("call f with raw literal string '^/'.", 'f ( "^/" )', 'f ( r"^/" )'),
    ("find bytes string '\\r\\n' in chunk.", "chunk . find ( '\\r\\n' )", "chunk . find ( b'\\r\\n' )"),
    ("x is a raw string 'a'.", "x = r'a'", "x = r'a'"),  # already there
    ("x is a raw string 'a'.", "x = u'a'", "x = u'a'"),  # any prefix is kept
    ("x is a string 'a'.", "x = 'a'", "x = 'a'"),  # not described as raw
    ("x is a raw string 'a'.", "x = 'b' + 'a'", "x = 'b' + r'a'"),  # only the described literal
    ("a withdraw string 'a'.", "x = 'a'", "x = 'a'"),  # a whole word 'raw' only
    ("x is a raw string 'a'.", "x = 'a", "x = 'a"),  # an unclosed literal is no literal
])
def test_add_described_prefixes(nl, code, expected):
    assert P.add_described_prefixes(nl, code) == expected
