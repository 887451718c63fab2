"""Below the heads (2): dictionaries of a tower's token states, trained here or loaded, browsed, named and tied to
the heads and neurons that write them. SAEs (of the stream after a block) and transcoders (of a block's MLP) are
one kind of thing, a `Dictionary`:

    model.py     the dictionary (encoder, sparse activation, decoder; a transcoder's skip), save and load
    streams.py   what dictionaries read, every chosen layer from one forward pass per image; the shuffle buffer
    training.py  training one layer or many together (TopK + AuxK, ReLU + L1, JumpReLU), and measuring (FVU, L0)
    atlas.py     each feature's top images, frequency and name over a set of images
    effects.py   one image's features, who writes them, removing and adding them, the tower with its MLPs replaced
    formats.py   SAELens's format (read and written), ViT-Prisma's SAEs and transcoders, saev's SAEs
    store.py     where a model's dictionaries live; training, measuring, describing and storing them in one call
"""
from .atlas import ATLAS_MANIFEST, FEATURE_TOP_IMAGES, FeatureAtlas, describe_features, feature_atlas, name_features
from .effects import (FeatureReport, FeatureWriters, embedding_from, explain_features, feature_writers, feature_writes,
                      image_features, intervened_scores, pre_activation_parts, replaced_embeddings, stream_and_inputs)
from .formats import load_pretrained, model_names, save_saelens
from .model import KINDS, SAE_FILE, SAE_MANIFEST, Dictionary, DictionaryConfig
from .store import (FOLDERS, HOLD_OUT_EVERY, MIN_EXPLAINED_VARIANCE, TOY_TRAINING_TOKENS, default_layer, described,
                    dictionary_folder, features_folder, provenance, stored_dictionary, stored_layers, stored_sae,
                    train_dictionaries_of, train_features)
from .streams import (TOKEN_BLOCK_BYTES, ActivationBuffer, DictionaryInputsTask, dictionary_inputs, images_within,
                      mlp_pairs, toy_blocks, token_states)
from .training import DictionaryReport, DictionaryTrainer, evaluate, geometric_median, train_dictionaries, train_sae

__all__ = [
    "ATLAS_MANIFEST", "FEATURE_TOP_IMAGES", "FOLDERS", "HOLD_OUT_EVERY", "KINDS", "MIN_EXPLAINED_VARIANCE", "SAE_FILE",
    "SAE_MANIFEST", "TOKEN_BLOCK_BYTES", "TOY_TRAINING_TOKENS", "ActivationBuffer", "Dictionary", "DictionaryConfig",
    "DictionaryInputsTask", "DictionaryReport", "DictionaryTrainer", "FeatureAtlas", "FeatureReport",
    "FeatureWriters", "default_layer", "describe_features", "described", "dictionary_folder", "dictionary_inputs",
    "embedding_from", "evaluate", "explain_features", "feature_atlas", "feature_writers", "feature_writes",
    "features_folder", "geometric_median", "image_features", "images_within", "intervened_scores",
    "load_pretrained", "mlp_pairs", "model_names", "name_features", "pre_activation_parts", "provenance",
    "replaced_embeddings", "save_saelens", "stored_dictionary", "stored_layers", "stored_sae", "stream_and_inputs",
    "toy_blocks", "token_states", "train_dictionaries", "train_dictionaries_of", "train_features", "train_sae"]
