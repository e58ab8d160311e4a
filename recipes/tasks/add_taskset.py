"""A small verifiers v1 taskset (recipes/tasks/verifiers.yaml, and the tests): "What is a + b?",
scored by its own reward. A taskset of your own is written the same way: data, a task with
@vf.reward methods, a config, and load()."""

import verifiers.v1 as vf


class AddData(vf.TaskData):
    answer: str


class AddTask(vf.Task[AddData]):
    @vf.reward(weight=1.0)
    async def correct(self, trace: vf.Trace) -> float:
        return float(trace.last_reply.strip().split()[-1:] == [self.data.answer])

    @vf.metric
    async def length(self, trace: vf.Trace) -> float:
        return float(len(trace.last_reply))


class AddConfig(vf.TasksetConfig):
    num_tasks: int = 20


class AddTaskset(vf.Taskset[AddTask, AddConfig]):
    def load(self):
        return [AddTask(AddData(prompt=[{"role": "user", "content": f"What is {i} + {i + 1}?"}], answer=str(2 * i + 1)))
                for i in range(self.config.num_tasks)]
