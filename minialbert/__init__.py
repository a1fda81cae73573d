"""minialbert: distil BERT-class teachers into recursive MiniALBERT students.

Importing the package registers the MiniALBERT classes with the transformers Auto classes,
so `AutoModelForSequenceClassification.from_pretrained(dir)` works on a minialbert dir.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .configuration import MiniAlbertConfig
from .convert import import_authors_checkpoint
from .modeling import (
    MiniAlbertForMaskedLM,
    MiniAlbertForSequenceClassification,
    MiniAlbertForTokenClassification,
    MiniAlbertModel,
    MiniAlbertPreTrainedModel,
)
from .parameters import count_parameters, init_embeddings_from, prepare_for_adapter_tuning

__version__ = "0.1.0"

AutoConfig.register("minialbert", MiniAlbertConfig, exist_ok=True)
AutoModel.register(MiniAlbertConfig, MiniAlbertModel, exist_ok=True)
AutoModelForMaskedLM.register(MiniAlbertConfig, MiniAlbertForMaskedLM, exist_ok=True)
AutoModelForSequenceClassification.register(MiniAlbertConfig, MiniAlbertForSequenceClassification, exist_ok=True)
AutoModelForTokenClassification.register(MiniAlbertConfig, MiniAlbertForTokenClassification, exist_ok=True)

__all__ = [
    "MiniAlbertConfig",
    "MiniAlbertModel",
    "MiniAlbertPreTrainedModel",
    "MiniAlbertForMaskedLM",
    "MiniAlbertForSequenceClassification",
    "MiniAlbertForTokenClassification",
    "count_parameters",
    "import_authors_checkpoint",
    "init_embeddings_from",
    "prepare_for_adapter_tuning",
]
