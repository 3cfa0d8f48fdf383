"""Knowledge injection against fine-tuning (the follow-up paper's second claim), run by
``benchmarks/ds_plus.py --part finetune``: the same labelled data taught to the large model itself
(fine-tuned), or to a small model that works with the frozen large model (Data Shunt).

- ``movies``: the main job's task and split (VADER movie sentences, 300 test, 2,000 validation,
  the rest training; seed 0). Fine-tuned: each ``--lora-model`` (the large model itself,
  Qwen2.5-Coder-1.5B, first: ``lora``; every one in ``lora_by_model``), loaded by transformers from
  the GGUF file the project installs, with LoRA adapters (peft; rank 8 on the attention projections)
  and a classification head, trained on ``--lora-train`` training sentences for ``--lora-epochs``
  epochs. Data Shunt: the main job (MiniLM trained on every training sentence, the frozen
  Qwen2.5-Coder-1.5B, δ certified on the validation sentences with at most 400 LLM calls), and the
  same shunt with the small model trained on only the sentences the LoRA run saw.
- ``debian_interface``: the package facet task's ``interface`` (name and synopsis -> user
  interface; the split fixed by package name). Fine-tuned as above; Data Shunt: TF-IDF with the
  frozen 1.5B asked the facet question zero-shot (as ``--part facets``).
- ``images``: Fashion-MNIST-LT at ratio 100 (1,236 training images). Fine-tuned: the ImageNet
  EfficientNet-Lite0 trained whole on the long-tailed images at ``--image-size`` pixels
  (class-weighted cross-entropy, horizontal flips, the epoch with the best validation accuracy
  kept); Data Shunt: the
  long-tail benchmark's result at the same ratio and seed (ResNet-32 with the frozen
  EfficientNet-Lite0 few-shot stand-in, ``benchmarks/results/longtail.json``).

Every figure is on the test items; training seconds are wall-clock on this machine (2 CPU cores).
"""

import json
import time
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from datashunt import ShuntClassifier
from datashunt.backends.llama_cpp import LlamaCppModel, gguf_path
from datashunt.demos import DEMO_INSTRUCTION
from datashunt.eval.compare import compare
from datashunt.io.datasets.debian import facet_split, load_debian_facets
from datashunt.io.datasets.vader import load_vader
from datashunt.small import make_small

LONGTAIL = Path(__file__).parent / "results" / "longtail.json"
INTERFACE_QUESTION = (
    "This is a Debian package: its name and one-line description. What kind of user interface does it offer?"
)


class LoraClassifier:
    """A GGUF causal LM loaded into transformers as a sequence classifier (the last token's state
    into a new linear head) with LoRA adapters: only the adapters and the head are trained."""

    def __init__(self, model: str, instruction: str, *, rank=8, epochs=1, batch_size=8, lr=2e-4, seed=0):
        self.model, self.instruction, self.rank = model, instruction, rank
        self.epochs, self.batch_size, self.lr, self.seed = epochs, batch_size, lr, seed

    def _inputs(self, texts):
        return [f"{self.instruction}\nText: {t}" for t in texts]

    def fit(self, texts, labels):
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        torch.manual_seed(self.seed)
        start = time.perf_counter()
        path = gguf_path(self.model)
        self.classes_ = np.unique(labels)
        self.tokenizer_ = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        net = AutoModelForSequenceClassification.from_pretrained(
            path.parent, gguf_file=path.name, num_labels=len(self.classes_), dtype=torch.float32
        )
        net.config.pad_token_id = self.tokenizer_.pad_token_id or self.tokenizer_.eos_token_id
        config = LoraConfig(
            task_type="SEQ_CLS",
            r=self.rank,
            lora_alpha=2 * self.rank,
            lora_dropout=0.05,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        )
        self.net_ = get_peft_model(net, config)
        self.load_seconds_ = time.perf_counter() - start
        self.trainable_ = sum(p.numel() for p in self.net_.parameters() if p.requires_grad)
        y = torch.tensor(np.searchsorted(self.classes_, labels))
        texts = self._inputs(texts)
        optimiser = torch.optim.AdamW([p for p in self.net_.parameters() if p.requires_grad], lr=self.lr)
        rng = np.random.default_rng(self.seed)
        start = time.perf_counter()
        self.net_.train()
        self.losses_ = []
        for _ in range(self.epochs):
            order = rng.permutation(len(texts))
            for i in range(0, len(order), self.batch_size):
                rows = order[i : i + self.batch_size]
                batch = self.tokenizer_([texts[j] for j in rows], return_tensors="pt", padding=True, truncation=True)
                loss = self.net_(**batch, labels=y[rows]).loss
                loss.backward()
                optimiser.step()
                optimiser.zero_grad()
                self.losses_.append(float(loss.detach()))
        self.train_seconds_ = time.perf_counter() - start
        return self

    def predict(self, texts):
        import torch

        self.net_.eval()
        texts, out, tokens = self._inputs(texts), [], 0
        start = time.perf_counter()
        with torch.no_grad():
            for i in range(0, len(texts), 16):
                batch = self.tokenizer_(texts[i : i + 16], return_tensors="pt", padding=True, truncation=True)
                tokens += int(batch["attention_mask"].sum())
                out.append(self.net_(**batch).logits.argmax(dim=1).numpy())
        self.predict_seconds_ = time.perf_counter() - start
        self.tokens_per_item_ = tokens / max(len(texts), 1)
        return self.classes_[np.concatenate(out)]


def lora_figures(lora: LoraClassifier, X_test, y_test) -> dict:
    accuracy = float(np.mean(lora.predict(list(X_test)) == np.asarray(y_test)))
    return {
        "model": f"{lora.model} + LoRA (rank {lora.rank}, {lora.trainable_:,} trained parameters)",
        "accuracy": accuracy,
        "train_seconds": lora.train_seconds_,
        "load_seconds": lora.load_seconds_,
        "epochs": lora.epochs,
        "final_loss": float(np.mean(lora.losses_[-8:])),
        "inference_seconds_per_item": lora.predict_seconds_ / len(y_test),
        "large_tokens_per_item": lora.tokens_per_item_,
    }


def shunt_figures(shunt: ShuntClassifier, X_test, y_test, train_seconds: float) -> dict:
    """Data Shunt's test accuracy, share sent, LLM prompt tokens and seconds per item: the route's
    own time with every LLM answer in the call cache, plus the seconds the LLM took on the items
    sent when those calls were made (``large_seconds`` of :func:`~datashunt.eval.compare.compare`,
    which makes them), so no call is counted twice."""
    evaluation = compare(shunt, list(X_test), np.asarray(y_test))
    rows = evaluation.summary.set_index("system")
    start = time.perf_counter()
    table = shunt.route(list(X_test))
    seconds = time.perf_counter() - start
    return {
        "accuracy": float(np.mean(table["label"].to_numpy() == np.asarray(y_test))),
        "large_share": float(rows.loc["data shunt", "large_rate"]),
        "large_tokens_per_item": float(table["prompt_tokens"].mean()),
        "train_seconds": train_seconds,
        "inference_seconds_per_item": (seconds + float(rows.loc["data shunt", "large_seconds"])) / len(y_test),
        "small_accuracy": float(rows.loc["small only", "accuracy"]),
        "large_accuracy": float(rows.loc["large only", "accuracy"]),
    }


def fitted_shunt(small, large, X, y, X_val, y_val, seed, **params) -> tuple:
    start = time.perf_counter()
    shunt = ShuntClassifier(small, large, random_state=seed, **params).fit(X, y, X_val=X_val, y_val=y_val)
    return shunt, time.perf_counter() - start


def text_task(name, args, X, y, X_val, y_val, X_test, y_test, small: str, instruction: str, **shunt_params) -> dict:
    rng = np.random.default_rng(args.seed)
    seen = rng.choice(len(X), min(args.lora_train, len(X)), replace=False)
    X_seen, y_seen = [X[i] for i in seen], np.asarray(y)[seen]
    by_model = {}
    for model in args.lora_model:
        lora = LoraClassifier(model, instruction, epochs=args.lora_epochs, seed=args.seed).fit(X_seen, y_seen)
        by_model[model] = lora_figures(lora, X_test, y_test) | {"n_train": len(seen)}
        print(name, model, json.dumps({k: by_model[model][k] for k in ("accuracy", "train_seconds")}), flush=True)
        del lora  # one LLM in memory at a time
    result = {"lora": by_model[args.lora_model[0]], "lora_by_model": by_model}
    large = LlamaCppModel(args.model, prompt=instruction)
    shunt, seconds = fitted_shunt(
        make_small(small, random_state=args.seed), large, X, y, X_val, y_val, args.seed, **shunt_params
    )
    result["ds_plus"] = shunt_figures(shunt, X_test, y_test, seconds) | {"n_train": len(X), "small": small}
    same, seconds = fitted_shunt(
        make_small(small, random_state=args.seed), large, X_seen, y_seen, X_val, y_val, args.seed, **shunt_params
    )
    result["ds_plus_same_data"] = shunt_figures(same, X_test, y_test, seconds) | {"n_train": len(seen), "small": small}
    print(
        name, "ds_plus", result["ds_plus"]["accuracy"], "same data", result["ds_plus_same_data"]["accuracy"], flush=True
    )
    return result


def movies(args) -> dict:
    frame = load_vader("movies")
    rest, test = train_test_split(frame, test_size=300, random_state=args.seed, stratify=frame["label"])
    train, val = train_test_split(rest, test_size=2000, random_state=args.seed, stratify=rest["label"])
    return text_task(
        "movies",
        args,
        train["text"].tolist(),
        train["label"].to_numpy(),
        val["text"].tolist(),
        val["label"].to_numpy(),
        test["text"].tolist(),
        test["label"].to_numpy(),
        "minilm",
        DEMO_INSTRUCTION,
        max_calibration_calls=400,
    )


def debian_interface(args) -> dict:
    train, val, test = facet_split(load_debian_facets(("interface", "use")))
    return text_task(
        "debian_interface",
        args,
        train["text"].tolist(),
        train["interface"].to_numpy(),
        val["text"].tolist(),
        val["interface"].to_numpy(),
        test["text"].tolist(),
        test["interface"].to_numpy(),
        "tfidf",
        INTERFACE_QUESTION,
    )


def images(args) -> dict:
    import torch

    from datashunt.backends.fewshot import PIXEL_SCALE, _load_network
    from datashunt.io.datasets.fashion_mnist import long_tailed_task

    torch.manual_seed(args.seed)
    task = long_tailed_task(100, n_validation=100, random_state=args.seed)
    classes = np.unique(task.y_train)
    base = _load_network("cpu")
    net = type(base).from_name("efficientnet-lite0")
    net.load_state_dict(base.state_dict())
    head = torch.nn.Linear(1280, len(classes))
    F = torch.nn.functional

    def tensor(images):
        x = torch.from_numpy(np.asarray(images, dtype=np.float32))[:, None].div(255.0).expand(-1, 3, -1, -1)
        side = (args.image_size, args.image_size)
        return (F.interpolate(x, size=side, mode="bilinear", align_corners=False) - PIXEL_SCALE) / PIXEL_SCALE

    def logits(x):
        return head(net.extract_features(x).mean(dim=(2, 3)))

    def accuracy(images, labels) -> float:
        net.eval()
        with torch.no_grad():
            got = np.concatenate(
                [logits(tensor(images[i : i + 64])).argmax(1).numpy() for i in range(0, len(images), 64)]
            )
        return float(np.mean(classes[got] == labels))

    y = torch.tensor(np.searchsorted(classes, task.y_train))
    counts = np.bincount(y.numpy(), minlength=len(classes))
    weight = torch.tensor(len(y) / (len(classes) * counts), dtype=torch.float32)
    params = [{"params": net.parameters(), "lr": 1e-4}, {"params": head.parameters(), "lr": 1e-3}]
    optimiser = torch.optim.AdamW(params, weight_decay=1e-4)
    rng = np.random.default_rng(args.seed)
    best, history, start = (-1.0, None, None), [], time.perf_counter()
    for epoch in range(args.image_epochs):
        net.train()
        for rows in np.array_split(rng.permutation(len(y)), max(1, len(y) // 32)):
            x = tensor(task.X_train[rows])
            flip = torch.from_numpy(rng.uniform(size=len(rows)) < 0.5)
            x[flip] = x[flip].flip(-1)
            loss = F.cross_entropy(logits(x), y[rows], weight=weight)
            loss.backward()
            optimiser.step()
            optimiser.zero_grad()
        val_accuracy = accuracy(task.X_val, task.y_val)
        history.append(val_accuracy)
        print("images epoch", epoch, "validation", round(val_accuracy, 4), flush=True)
        if val_accuracy > best[0]:
            weights = [{k: v.clone() for k, v in part.state_dict().items()} for part in (net, head)]  # copies, now
            best = (val_accuracy, epoch, weights)
    train_seconds = time.perf_counter() - start
    net.load_state_dict(best[2][0])
    head.load_state_dict(best[2][1])
    start = time.perf_counter()
    test_accuracy = accuracy(task.X_test, task.y_test)
    seconds = (time.perf_counter() - start) / len(task.y_test)
    longtail = json.loads(LONGTAIL.read_text())
    ratio = longtail["imbalance_100"]
    return {
        "lora": {
            "model": f"EfficientNet-Lite0 (ImageNet), every weight fine-tuned at {args.image_size} px (not LoRA)",
            "accuracy": test_accuracy,
            "train_seconds": train_seconds,
            "epochs": args.image_epochs,
            "best_epoch": best[1],
            "validation_accuracy": history,
            "inference_seconds_per_item": seconds,
            "n_train": len(y),
        },
        "ds_plus": {
            "accuracy": ratio["ds"]["overall"],
            "large_share": ratio["ds"]["large_share"],
            "budget": {"accuracy": ratio["ds_budget"]["overall"], "large_share": ratio["ds_budget"]["large_share"]},
            "small_accuracy": ratio["small"]["overall"],
            "large_accuracy": ratio["large"]["overall"],
            "train_seconds": ratio["small_train_seconds"],
            "from": longtail["command"],
        },
    }


TASKS = {"movies": movies, "debian_interface": debian_interface, "images": images}
