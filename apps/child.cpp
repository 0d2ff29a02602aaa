// Child processes of seqlab itself (apps/child.h).
#include "apps/child.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

extern char** environ;

namespace seqlab::app {

bool ChildOutcome::exited_ok() const { return WIFEXITED(status) && WEXITSTATUS(status) == 0; }

std::string ChildOutcome::describe() const {
  return WIFEXITED(status) ? str("exit code ", WEXITSTATUS(status)) : str("signal ", WTERMSIG(status));
}

ChildOutcome run_child(const std::vector<std::string>& args, const std::vector<std::string>* env,
                       bool capture_stdout) {
  SEQLAB_CHECK(!args.empty(), "run_child: no program");
  std::vector<std::string> arg_copy = args;
  std::vector<char*> argv;
  for (auto& a : arg_copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_copy;
  std::vector<char*> envp;
  if (env) {
    env_copy = *env;
    for (auto& e : env_copy) envp.push_back(e.data());
    envp.push_back(nullptr);
  }
  int fds[2] = {-1, -1};
  if (capture_stdout) SEQLAB_CHECK(pipe(fds) == 0, "cannot start ", args[0], ": pipe() failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (capture_stdout) {
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, fds[0]);
    posix_spawn_file_actions_addclose(&actions, fds[1]);
  } else {
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  }
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, args[0].c_str(), &actions, nullptr, argv.data(), env ? envp.data() : environ);
  posix_spawn_file_actions_destroy(&actions);
  ChildOutcome o;
  if (capture_stdout) {
    close(fds[1]);
    if (rc == 0) {
      char buf[4096];
      for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR);)
        if (n > 0) o.out.append(buf, static_cast<size_t>(n));
    }
    close(fds[0]);
  }
  SEQLAB_CHECK(rc == 0, "cannot start ", args[0], ": ", std::strerror(rc));
  while (wait4(pid, &o.status, 0, &o.usage) < 0 && errno == EINTR) {
  }
  return o;
}

}  // namespace seqlab::app
