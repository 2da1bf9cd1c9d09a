"""leanformers: the transformers API, small and readable. Public names only; nothing lives here."""

from .auto import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForMultipleChoice,
                   AutoModelForQuestionAnswering, AutoModelForSequenceClassification, AutoModelForTokenClassification)
from .config import PretrainedConfig
from .data import (ClassLabel, DataCollatorForLanguageModeling, DataCollatorForSeq2Seq, DataCollatorWithPadding,
                   Dataset, DatasetDict, Features, IterableDataset, LargeList, List, Sequence, Value,
                   concatenate_datasets, default_data_collator, interleave_datasets, load_dataset, load_from_disk)
from .generation import (
    AsyncTextIteratorStreamer,
    EosTokenCriteria,
    EpsilonLogitsWarper,
    EtaLogitsWarper,
    ExponentialDecayLengthPenalty,
    ForcedBOSTokenLogitsProcessor,
    ForcedEOSTokenLogitsProcessor,
    GenerationConfig,
    InfNanRemoveLogitsProcessor,
    KVCache,
    LogitNormalization,
    LogitsProcessor,
    LogitsProcessorList,
    MaxLengthCriteria,
    MaxTimeCriteria,
    MinLengthLogitsProcessor,
    MinNewTokensLengthLogitsProcessor,
    MinPLogitsWarper,
    NoBadWordsLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    PrefixConstrainedLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    SequenceBiasLogitsProcessor,
    StoppingCriteria,
    StoppingCriteriaList,
    StopStringCriteria,
    SuppressTokensAtBeginLogitsProcessor,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TextIteratorStreamer,
    TextStreamer,
    TopHLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
    WatermarkDetector,
    WatermarkingConfig,
    WatermarkLogitsProcessor,
)
from .models.base import PreTrainedModel
from .models.bert import (BertConfig, BertForMaskedLM, BertForMultipleChoice, BertForQuestionAnswering,
                          BertForSequenceClassification, BertForTokenClassification, BertModel)
from .models.gemma3 import Gemma3ForCausalLM, Gemma3TextConfig, Gemma3TextForSequenceClassification, Gemma3TextModel
from .models.gpt2 import (GPT2Config, GPT2ForQuestionAnswering, GPT2ForSequenceClassification,
                          GPT2ForTokenClassification, GPT2LMHeadModel, GPT2Model)
from .models.llama import (LlamaConfig, LlamaForCausalLM, LlamaForQuestionAnswering, LlamaForSequenceClassification,
                           LlamaForTokenClassification, LlamaModel, MistralConfig, Qwen2Config, Qwen3Config)
from .models.outputs import (BaseModelOutput, BaseModelOutputWithPast, BaseModelOutputWithPooling,
                             BaseModelOutputWithPoolingAndCrossAttentions, CausalLMOutputWithPast, MaskedLMOutput,
                             ModelOutput, MultipleChoiceModelOutput, QuestionAnsweringModelOutput,
                             SequenceClassifierOutput, SequenceClassifierOutputWithPast, TokenClassifierOutput)
from .pipelines import Pipeline, pipeline
from .tokenization import (AutoTokenizer, BatchEncoding, BertTokenizer, BertTokenizerFast, GPT2Tokenizer,
                           GPT2TokenizerFast, PreTrainedTokenizer, PreTrainedTokenizerFast)
from .training import (AdamW, EarlyStoppingCallback, EvalPrediction, LoraConfig, PeftModel, Trainer, TrainerCallback,
                       TrainerControl, TrainerState, TrainingArguments, get_constant_schedule_with_warmup,
                       get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup, get_peft_model, get_scheduler,
                       set_seed)

PreTrainedConfig = PretrainedConfig

__version__ = "0.1.0"
