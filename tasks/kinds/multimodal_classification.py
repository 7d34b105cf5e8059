"""multimodal_classification: text about one or more images, one label (visual NLI: XVNLI /
SNLI-VE; visual reasoning over an image pair: MaRVL / NLVR2). Examples: `MultimodalExample`
(xstilts.tasks.iglue). Features: `MultimodalFeatures`, the token ids plus the ids of the images
and the feature store they come from; a batch reads the images' region features from the store
(`MultimodalFeatures.collate_batch`), so features stay small and cacheable and no store is ever
loaded whole. Predictions: label strings. Metric: accuracy (chance: the majority class).

The model (`VisualTextClassifier`) is any HF text encoder of the study (the phase-1 model or a
phase-2 encoder, XLM-R, BERT, ...) with the image regions fused in **single-stream**: each region's
feature vector and its 5 location coordinates are projected into the encoder's hidden size
(volta's image and location embeddings: two linear maps, summed, layer-normalised, plus a
learned embedding of which image of the example the region belongs to) and inserted as extra
tokens into the encoder's input, right after its first token, where the first segment of a text
pair (an NLI premise) would start:

    <s> [region 1] ... [region n] </s></s> hypothesis </s>        (XLM-R; BERT: [CLS] ... [SEP] ...)

Every layer of the encoder then attends across text and regions, and the first token's final
state feeds a classification head (dense, tanh, dense, as RoBERTa's). Why single-stream rather
than a cross-attention block on top of a text-only encoder: the question is whether what the
encoder learned from *text* NLI (comparing a hypothesis against a premise, layer by layer)
carries over to images in other languages. Single-stream puts the image exactly where the premise
was and reuses every pretrained and intermediate-trained layer on it, adding only the projection
and the head (no new attention layers trained from scratch on English data alone); it is also
how most IGLUE baselines work (UNITER, VisualBERT, VL-BERT, M3P, UC2 are single-stream in volta).
Text tokens keep the position ids the encoder would give them without the regions; regions share
one position id (the first segment's), so their order carries no meaning and the text's
positions are unchanged; they get segment 0.

Saved as a folder: the encoder's `save_pretrained` files (config.json with the labels,
the weights, the tokenizer beside them) plus `multimodal.json` (fusion type, feature size) and
`multimodal_head.safetensors` (projection and head). `VisualTextClassifier.from_pretrained(path)`
loads such a folder, or builds a fresh projection and head on a plain encoder folder (phase 1 or
a phase-2 encoder): the same call `load_model_for_task` makes for every head.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch
from torch import nn

from xstilts.tasks.iglue import BOX_DIM, FEATURE_DIM, open_store
from xstilts.tasks.kinds import register
from xstilts.tasks.kinds.classification import NLI_LABELS, Classification
from xstilts.tasks.kinds.common import Features, batches_by_length, check_positions, collate, max_positions

MAX_IMAGES = 2  # images per example the image-slot embedding distinguishes (MaRVL: left, right)
FUSION = "single-stream"
CONFIG_FILE = "multimodal.json"
WEIGHTS_FILE = "multimodal_head.safetensors"
REGION_INPUTS = ("region_features", "region_locations", "region_mask", "region_images")


@dataclass
class MultimodalFeatures:
    """One example: its token ids (`Features`' fields) and its images (ids in the store `store`,
    a `StoreSpec` string). Plain ints, lists and strings: the feature cache stores them as they are."""

    input_ids: list[int]
    labels: int
    token_type_ids: list[int] | None
    image_ids: list[str]
    store: str

    @staticmethod
    def collate_batch(batch: list["MultimodalFeatures"], pad_token_id: int | None) -> dict[str, torch.Tensor]:
        """The text inputs as `collate` pads them, plus the regions of every example's images:
        region_features [B, R, D], region_locations [B, R, 5], region_mask [B, R] and
        region_images [B, R] (which image of the example), R the most regions of the batch."""
        inputs = collate([Features(f.input_ids, f.labels, f.token_type_ids) for f in batch], pad_token_id)
        per_example = []
        for feature in batch:
            store = open_store(feature.store)
            per_example.append([(slot, *store.regions(image)) for slot, image in enumerate(feature.image_ids)])
        counts = [sum(len(f) for _, f, _ in images) for images in per_example]
        width = max(counts, default=0)
        dim = next((f.shape[1] for images in per_example for _, f, _ in images if len(f)), FEATURE_DIM)
        features = torch.zeros((len(batch), width, dim), dtype=torch.float32)
        locations = torch.zeros((len(batch), width, BOX_DIM), dtype=torch.float32)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        slots = torch.zeros((len(batch), width), dtype=torch.long)
        for row, images in enumerate(per_example):
            start = 0
            for slot, region_features, region_locations in images:
                end = start + len(region_features)
                if region_features.shape[1] != dim:
                    raise ValueError(f"images of one batch have region features of {dim} and {region_features.shape[1]} "
                                     "dimensions; use one feature store (one extractor) per task")
                features[row, start:end] = torch.from_numpy(region_features)
                locations[row, start:end] = torch.from_numpy(region_locations)
                mask[row, start:end] = 1
                slots[row, start:end] = min(slot, MAX_IMAGES - 1)
                start = end
        return {**inputs, "region_features": features, "region_locations": locations, "region_mask": mask,
                "region_images": slots}


class VisualTextClassifier(nn.Module):
    """A text encoder with image regions as extra input tokens (single-stream) and a
    classification head on its first token. See the module docstring."""

    def __init__(self, encoder, num_labels: int, feature_dim: int = FEATURE_DIM):
        super().__init__()
        self.encoder = encoder
        self.feature_dim, self.num_labels = feature_dim, num_labels
        config = encoder.config
        hidden = config.hidden_size
        eps = getattr(config, "layer_norm_eps", 1e-12)
        dropout = getattr(config, "hidden_dropout_prob", 0.1)
        self.region_projection = nn.Linear(feature_dim, hidden)
        self.location_projection = nn.Linear(BOX_DIM, hidden)
        self.region_norm = nn.LayerNorm(hidden, eps=eps)
        self.image_embeddings = nn.Embedding(MAX_IMAGES, hidden)
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(hidden, hidden)
        self.out_proj = nn.Linear(hidden, num_labels)
        std = getattr(config, "initializer_range", 0.02)
        for module in self.head_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, 0.0, std)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    # --- what callers use of an HF head -----------------------------------------------------

    @property
    def config(self):
        return self.encoder.config

    @property
    def base_model(self):
        return self.encoder

    def get_input_embeddings(self):
        return self.encoder.get_input_embeddings()

    def head_modules(self) -> list[nn.Module]:
        return [self.region_projection, self.location_projection, self.region_norm, self.image_embeddings,
                self.dense, self.out_proj]

    def head_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("encoder.")}

    def save_pretrained(self, folder: str | os.PathLike, **kwargs) -> None:
        from safetensors.torch import save_file

        os.makedirs(folder, exist_ok=True)
        self.encoder.save_pretrained(folder, **kwargs)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.head_state_dict().items()},
                  os.path.join(folder, WEIGHTS_FILE))
        with open(os.path.join(folder, CONFIG_FILE), "w", encoding="utf-8") as handle:
            json.dump({"format": 1, "fusion": FUSION, "feature_dim": self.feature_dim, "location_dim": BOX_DIM,
                       "max_images": MAX_IMAGES, "num_labels": self.num_labels}, handle, indent=2)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, config=None, **kwargs) -> "VisualTextClassifier":
        """A saved multimodal classifier, or a fresh fusion + head on the encoder at `path` (an HF
        hub name or folder: a pretrained MLM, a bare encoder, a text classifier)."""
        from transformers import AutoConfig, AutoModel

        if config is None:
            config = AutoConfig.from_pretrained(path)
        try:  # no pooler: the head reads the first token's state (an unused pooler would trip DDP)
            encoder = AutoModel.from_pretrained(path, config=config, add_pooling_layer=False, **kwargs)
        except TypeError:
            encoder = AutoModel.from_pretrained(path, config=config, **kwargs)
        saved = os.path.join(str(path), CONFIG_FILE)
        if not os.path.isfile(saved):
            return cls(encoder, config.num_labels)
        with open(saved, encoding="utf-8") as handle:
            meta = json.load(handle)
        if meta.get("fusion") != FUSION or meta.get("location_dim", BOX_DIM) != BOX_DIM:
            raise ValueError(f"{saved}: a {meta.get('fusion')!r} model with {meta.get('location_dim')} location values; "
                             f"this version reads {FUSION!r} models with {BOX_DIM}")
        model = cls(encoder, int(meta.get("num_labels", config.num_labels)), int(meta["feature_dim"]))
        from safetensors.torch import load_file

        missing, unexpected = model.load_state_dict(load_file(os.path.join(str(path), WEIGHTS_FILE)), strict=False)
        missing = [k for k in missing if not k.startswith("encoder.")]
        if missing or unexpected:
            raise ValueError(f"{path}: {WEIGHTS_FILE} does not match the model (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]})")
        return model

    # --- forward ------------------------------------------------------------------------------

    def _position_offset(self) -> int | None:
        """The position id of the first token (RoBERTa-type models count from padding_idx + 1),
        or None when the encoder has no absolute position table (then it numbers positions itself)."""
        usable = max_positions(self.config)
        return None if usable is None else self.config.max_position_embeddings - usable

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, region_features=None,
                region_locations=None, region_mask=None, region_images=None, labels=None, **unused):
        from transformers.modeling_outputs import SequenceClassifierOutput

        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        embeddings = self.encoder.get_input_embeddings()(input_ids)
        batch, length = input_ids.shape
        offset = self._position_offset()
        positions = None if offset is None else (offset + torch.arange(length, device=input_ids.device)).expand(batch, -1)
        types = token_type_ids
        if region_features is not None and region_features.shape[1] > 0:
            if region_features.shape[-1] != self.feature_dim:
                raise ValueError(f"region features have {region_features.shape[-1]} dimensions but the model projects "
                                 f"{self.feature_dim}; use features of the extractor the model was trained with")
            regions = self.region_norm(self.region_projection(region_features.to(self.region_projection.weight.dtype))
                                       + self.location_projection(region_locations.to(self.region_projection.weight.dtype)))
            regions = (regions + self.image_embeddings(region_images)).to(embeddings.dtype)
            count = regions.shape[1]
            embeddings = torch.cat([embeddings[:, :1], regions, embeddings[:, 1:]], dim=1)
            attention_mask = torch.cat([attention_mask[:, :1], region_mask.to(attention_mask.dtype), attention_mask[:, 1:]], 1)
            if positions is not None:
                shared = torch.full((batch, count), offset + 1, dtype=positions.dtype, device=positions.device)
                positions = torch.cat([positions[:, :1], shared, positions[:, 1:]], dim=1)
            if types is not None:
                types = torch.cat([types[:, :1], torch.zeros((batch, count), dtype=types.dtype, device=types.device),
                                   types[:, 1:]], dim=1)
        encoded = self.encoder(inputs_embeds=embeddings, attention_mask=attention_mask, token_type_ids=types,
                               position_ids=positions)
        state = self.dropout(encoded.last_hidden_state[:, 0])
        logits = self.out_proj(self.dropout(torch.tanh(self.dense(state))))
        loss = nn.functional.cross_entropy(logits.float(), labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


class MultimodalClassification(Classification):  # scores and baselines like classification
    name = "multimodal_classification"
    head = VisualTextClassifier

    def task_type(self, task):
        return "visual NLI" if set(task.labels) == NLI_LABELS else "visual reasoning"

    def encode(self, task, examples, tokenizer, max_length, doc_stride, segments):
        """The text as the second segment of a pair whose first is empty (the regions go there);
        the label's index; the images and their store."""
        if not examples:
            return []
        label_ids = {label: i for i, label in enumerate(task.labels)}
        unknown = next((e.label for e in examples if e.label not in label_ids), None)
        if unknown is not None:
            raise ValueError(f"task {task.name}: label {unknown!r} is not one of {', '.join(task.labels)}")
        encoded = tokenizer([""] * len(examples), [e.text for e in examples], truncation=True, max_length=max_length,
                            return_token_type_ids=segments)
        types = encoded["token_type_ids"] if segments else [None] * len(examples)
        return [MultimodalFeatures(list(ids), label_ids[e.label], list(t) if t is not None else None,
                                   list(e.image_ids), e.store)
                for ids, e, t in zip(encoded["input_ids"], examples, types)]

    def predict(self, task, model, features, pad_token_id, batch_size, device, **decoding):
        check_positions(task, model, features)
        predictions: list = [None] * len(features)
        model.eval()
        with torch.no_grad():
            for indices in batches_by_length(features, batch_size):
                batch = collate([features[i] for i in indices], pad_token_id)
                inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
                best = model(**inputs).logits.float().cpu().argmax(-1)
                for row, i in enumerate(indices):
                    predictions[i] = task.labels[int(best[row])]
        return predictions


register(MultimodalClassification())
